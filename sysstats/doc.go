// Package sysstats measures a host and the members running on it: the figures
// an agent puts in its heartbeat and the CLI shows as an addon's stats. It
// fills the wire's own types (api.HostReport, api.MemberReport), so a figure
// has one type from the collector to the coordinator, the CLI and /metrics.
//
// It owns:
//
//   - host figures, read through gopsutil with a context carrying
//     common.EnvMap so that /proc and /sys can be pointed elsewhere: CPU %
//     (from two samples), memory total/used/free/available, swap
//     total/used/free, load averages, and total/free space of the
//     filesystem holding a given path;
//   - per-member figures read straight from the member's cgroup files
//     (cgroup v1 or v2, detected from the files under Config.CgroupRoot):
//     CPU usage and %, memory current / highest since the member started /
//     limit / free, swap current / highest / limit / free;
//   - the on-disk size of a member's database (dump.rdb plus the
//     append-only file or directory);
//   - Tracker, the "highest since the member (re)started" rule, and the pure
//     CPU % functions.
//
// Every figure is produced by its own collector behind a one-method
// interface (HostCollector, MemberCollector). A collector that fails adds a
// CollectorError to the report and leaves its section nil; the other
// sections are still filled, so one unreadable file never blanks a report.
//
// It does not own: finding a member's cgroup path, pid or start time (the
// agent's runtime supplies them in a MemberTarget), sending reports
// (the agent's heartbeat), keeping history or deciding anything from the
// figures (the coordinator), or the wire format (api/). It never writes to
// /proc or to cgroups; only its tests create cgroups.
//
// Memory "current" for a member is the working set, computed the way
// `docker stats` and nerdctl do: on cgroup v1 memory.usage_in_bytes minus
// total_inactive_file from memory.stat, on v2 memory.current minus
// inactive_file. Inactive file pages are page cache the kernel drops first
// under pressure, so they are not what a member "uses". The raw kernel
// figure is kept beside it as UsageBytes.
package sysstats
