//! Host facts (sent once, in Hello) and load reports (sent every heartbeat), from sysinfo.

use std::path::{Path, PathBuf};

use corral_proto::v1::{HostFacts, LoadReport};
use sysinfo::{Disks, System};

/// Samples this host; keeps the sysinfo state between samples so CPU use is measured
/// over the interval since the previous sample.
pub struct Sampler {
    system: System,
    disks: Disks,
    data_dir: PathBuf,
}

impl Sampler {
    pub fn new(data_dir: &Path) -> Sampler {
        let mut system = System::new();
        system.refresh_memory();
        system.refresh_cpu_usage();
        Sampler {
            system,
            disks: Disks::new_with_refreshed_list(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// The disk holding the data dir: the one with the longest matching mount point.
    fn data_disk(&self) -> Option<&sysinfo::Disk> {
        let dir = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        self.disks
            .list()
            .iter()
            .filter(|d| dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
    }

    pub fn facts(&self) -> HostFacts {
        HostFacts {
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.to_string()),
            kernel: System::kernel_version().unwrap_or_default(),
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: self.system.total_memory(),
            disk_bytes: self.data_disk().map_or(0, sysinfo::Disk::total_space),
            data_dir: std::fs::canonicalize(&self.data_dir)
                .unwrap_or_else(|_| self.data_dir.clone())
                .display()
                .to_string(),
        }
    }

    pub fn load(&mut self) -> LoadReport {
        self.system.refresh_memory();
        self.system.refresh_cpu_usage();
        self.disks.refresh(false);
        let avg = System::load_average();
        LoadReport {
            cpu_percent: self.system.global_cpu_usage(),
            load1: avg.one,
            load5: avg.five,
            load15: avg.fifteen,
            memory_used_bytes: self.system.used_memory(),
            disk_free_bytes: self.data_disk().map_or(0, sysinfo::Disk::available_space),
        }
    }
}

/// The host name, the default node name.
pub fn host_name() -> String {
    System::host_name().unwrap_or_else(|| "localhost".to_string())
}
