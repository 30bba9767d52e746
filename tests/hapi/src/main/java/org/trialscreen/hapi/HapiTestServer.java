package org.trialscreen.hapi;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.IPagingProvider;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.util.VersionUtil;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * A HAPI FHIR JPA server (R4, H2 in memory) on one loopback port, for TrialScreen's tests and walkthrough.
 *
 * <p>Two servlets share one JPA context (one database): {@code /fhir} is open, {@code /secure/fhir} wants
 * {@code Authorization: Bearer <trialscreen.hapi.token>} on everything but {@code /metadata}, so tests can get
 * a real HAPI 401. System properties: {@code trialscreen.hapi.port} (0 = any), {@code trialscreen.hapi.host},
 * {@code trialscreen.hapi.token}. Prints one {@code TRIALSCREEN-HAPI READY ...} line when it serves.
 */
public final class HapiTestServer {
    private HapiTestServer() {
    }

    public static void main(String[] args) throws Exception {
        long started = System.nanoTime();
        int port = Integer.getInteger("trialscreen.hapi.port", 8080);
        String host = System.getProperty("trialscreen.hapi.host", "127.0.0.1");
        String token = System.getProperty("trialscreen.hapi.token", "trialscreen-test-token");
        // HAPI's own cap on _count is 50 (BasePagingProvider); a deployment raises it (the JPA starter: 200).
        // The hook-fhir benchmark asks for 1000 so that its slowest query is as short as the server allows.
        Integer maxPageSize = Integer.getInteger("trialscreen.hapi.maxPageSize");

        AnnotationConfigApplicationContext context = new AnnotationConfigApplicationContext(HapiConfig.class);
        context.registerShutdownHook(); // SIGTERM closes the JPA context (and the batch2 scheduler) cleanly

        Server server = new Server();
        ServerConnector connector = new ServerConnector(server);
        connector.setHost(host);
        connector.setPort(port);
        server.addConnector(connector);

        ServletContextHandler handler = new ServletContextHandler();
        handler.setContextPath("/");
        handler.addServlet(new ServletHolder("open", restfulServer(context, null, maxPageSize)), "/fhir/*");
        handler.addServlet(new ServletHolder("secure", restfulServer(context, token, maxPageSize)), "/secure/fhir/*");
        server.setHandler(handler);
        server.setStopAtShutdown(true);
        server.start();

        double seconds = (System.nanoTime() - started) / 1e9;
        System.out.printf("TRIALSCREEN-HAPI READY http://%s:%d/fhir (secure: /secure/fhir) HAPI %s in %.1fs%n",
                host, connector.getLocalPort(), hapiVersion(), seconds);
        System.out.flush();
        server.join();
    }

    /** One RestfulServer over the shared JPA beans; with a token, guarded by {@link BearerTokenInterceptor}. */
    private static RestfulServer restfulServer(AnnotationConfigApplicationContext context, String token,
                                               Integer maxPageSize) {
        FhirContext fhirContext = context.getBean(FhirContext.class);
        RestfulServer restful = new RestfulServer(fhirContext);
        restful.registerProviders(context.getBean(ResourceProviderFactory.class).createProviders());
        restful.registerProvider(context.getBean(JpaSystemProvider.class));
        restful.registerProvider(context.getBean(BulkDataExportProvider.class));

        IFhirSystemDao<?, ?> systemDao = context.getBean(IFhirSystemDao.class);
        JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(restful, systemDao,
                context.getBean(JpaStorageSettings.class), context.getBean(ISearchParamRegistry.class),
                context.getBean(IValidationSupport.class));
        capabilities.setImplementationDescription("TrialScreen HAPI FHIR test server");
        restful.setServerConformanceProvider(capabilities);
        // database-backed paging: next links are HAPI's own ?_getpages=<search id>&_getpagesoffset=... links
        DatabaseBackedPagingProvider paging = context.getBean(DatabaseBackedPagingProvider.class);
        if (maxPageSize != null) {
            paging.setMaximumPageSize(maxPageSize);
        }
        restful.setPagingProvider((IPagingProvider) paging);
        restful.setDefaultResponseEncoding(EncodingEnum.JSON);
        if (token != null) {
            restful.registerInterceptor(new BearerTokenInterceptor(token));
        }
        return restful;
    }

    private static String hapiVersion() {
        return VersionUtil.getVersion();
    }
}
