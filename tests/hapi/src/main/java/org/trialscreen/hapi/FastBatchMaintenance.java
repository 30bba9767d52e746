package org.trialscreen.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import jakarta.annotation.PostConstruct;
import org.springframework.beans.factory.annotation.Autowired;
import org.springframework.context.annotation.Configuration;

/**
 * Batch2's maintenance pass moves jobs from step to step; HAPI runs it once a minute, so a tiny bulk export
 * would take minutes. A test server runs it every second ({@code trialscreen.hapi.batchMaintenanceMillis}).
 */
@Configuration
public class FastBatchMaintenance {
    @Autowired
    private IJobMaintenanceService maintenance;

    @PostConstruct
    void shortenThePass() {
        if (maintenance instanceof JobMaintenanceServiceImpl impl) {
            impl.setScheduledJobFrequencyMillis(Long.getLong("trialscreen.hapi.batchMaintenanceMillis", 1000L));
        }
    }
}
