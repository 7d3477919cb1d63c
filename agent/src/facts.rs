//! Host facts (sent once, in Hello) and load reports (sent every heartbeat), from sysinfo.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_proto::v1::{HostFacts, InstanceUsage, LoadReport};
use sysinfo::{Disks, System};

/// Samples this host; keeps the sysinfo state between samples so CPU use is measured
/// over the interval since the previous sample.
pub struct Sampler {
    system: System,
    disks: Disks,
    data_dir: PathBuf,
    cgroups: Option<Arc<crate::cgroup::Cgroups>>,
    /// Why cgroups are not usable (with `cgroups` None).
    cgroups_error: String,
}

impl Sampler {
    pub fn new(
        data_dir: &Path,
        cgroups: Option<Arc<crate::cgroup::Cgroups>>,
        cgroups_error: String,
    ) -> Sampler {
        let mut system = System::new();
        system.refresh_memory();
        system.refresh_cpu_usage();
        Sampler {
            system,
            disks: Disks::new_with_refreshed_list(),
            data_dir: data_dir.to_path_buf(),
            cgroups,
            cgroups_error,
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
            cgroups: self.cgroups.is_some(),
            cgroups_note: self
                .cgroups
                .as_ref()
                .map_or_else(|| self.cgroups_error.clone(), |c| c.summary.clone()),
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
            usage: self.cgroups.as_ref().map_or_else(Vec::new, instance_usage),
        }
    }
}

/// What each instance with a cgroup uses, for heartbeats and `/metrics`.
pub fn instance_usage(cgroups: &Arc<crate::cgroup::Cgroups>) -> Vec<InstanceUsage> {
    cgroups
        .usage_all()
        .into_iter()
        .filter_map(|(name, _, u, oom_kills)| {
            let (app, server) = corral_proto::names::split_server(&name)?;
            Some(InstanceUsage {
                app: app.to_string(),
                server: server.to_string(),
                cpu_seconds: u.cpu_seconds,
                cpu_throttled_seconds: u.throttled_seconds,
                memory_bytes: u.memory_bytes,
                memory_peak_bytes: u.memory_peak_bytes,
                pids: u.pids,
                oom_kills,
            })
        })
        .collect()
}

/// The default node name: the first label of the host name (`web-1` of
/// `web-1.example.com`), since a node name is a DNS label.
pub fn host_name() -> String {
    first_label(&System::host_name().unwrap_or_else(|| "localhost".to_string())).to_string()
}

/// The node name the host name gives, checked; the error says it came from the host name
/// and how to choose another.
pub fn default_node_name() -> Result<String, String> {
    let full = System::host_name().unwrap_or_else(|| "localhost".to_string());
    node_name_from_host(&full)
}

fn first_label(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

fn node_name_from_host(full: &str) -> Result<String, String> {
    let name = first_label(full);
    corral_proto::names::check_node_name(name).map_err(|e| {
        format!(
            "the host name {} does not give a valid node name ({e}); \
             pass --node NAME (or CORRAL_NODE, or `node` in the config file)",
            corral_proto::text::quoted(full)
        )
    })?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::node_name_from_host;

    #[test]
    fn the_default_node_name_is_the_host_names_first_label() {
        assert_eq!(node_name_from_host("web-1").as_deref(), Ok("web-1"));
        assert_eq!(
            node_name_from_host("web-1.dc2.example.com").as_deref(),
            Ok("web-1")
        );
        let err = node_name_from_host("build_box.example").expect_err("underscore");
        assert!(
            err.contains("host name \"build_box.example\"") && err.contains("--node"),
            "{err}"
        );
    }
}
