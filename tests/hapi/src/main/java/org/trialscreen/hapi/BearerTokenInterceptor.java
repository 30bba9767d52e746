package org.trialscreen.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.AuthenticationException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;

/** Answers 401 (HAPI's own OperationOutcome and WWW-Authenticate) unless the request carries the one token. */
@Interceptor
public class BearerTokenInterceptor {
    private final byte[] expected;

    public BearerTokenInterceptor(String token) {
        this.expected = ("Bearer " + token).getBytes(StandardCharsets.UTF_8);
    }

    @Hook(Pointcut.SERVER_INCOMING_REQUEST_PRE_HANDLED)
    public void requireToken(RequestDetails request, RestOperationTypeEnum operation) {
        if (operation == RestOperationTypeEnum.METADATA) {
            return; // the CapabilityStatement stays readable, as on SMART servers
        }
        String header = request.getHeader("Authorization");
        byte[] given = header == null ? new byte[0] : header.getBytes(StandardCharsets.UTF_8);
        if (!MessageDigest.isEqual(expected, given)) { // constant time
            throw new AuthenticationException("Missing or invalid bearer token")
                    .addAuthenticateHeaderForRealm("trialscreen-hapi");
        }
    }
}
