// Package agent is cacheplane-agent, the one process per host that makes the
// host do what the coordinator decided: it registers the host (id, address,
// memory, labels), watches the host's assignments with the coordinator's
// blocking query, converges the host's members onto them through the
// runtime (render the config, ensure the image, start, update live, destroy
// what is no longer assigned, with its data), and heartbeats the state of
// every member (pending, starting, running, failed, with the reason and the
// member's last log lines) together with host and member figures.
//
// It owns: the agent's configuration (Config), its identity (joining the
// fleet once with a join token, then its certificate in <data_dir>/identity
// for every call, renewed before expiry: identity.go), the coordinator
// client failover across members, the reconcile rules (what needs a restart, what
// changes live, when an exited member is started again), probing members
// (PING with AUTH, INFO replication, TCP connect) and the layout of the data
// dir (members/<member-id>/ with the 0600 config and the data; logs/;
// jobs/, scratch/), and running the backup and restore jobs the coordinator
// lists for the host (jobs.go: each once, at most two at a time, reported
// until accepted; the dump, drill and restore themselves are agent/backup's),
// and the failover guard of the business redis members it runs
// (promoteguard.go): a primary whose host reaches no majority of its
// sentinels is fenced, a replica further behind its primary than the bound
// is made unpromotable (docs/failover.md).
//
// It does not own: any decision about placement, failover, plans or
// retention (the coordinator's); config file contents (agent/render);
// containers (agent/runtime); figures (sysstats). It keeps no state of its
// own but the jobs' records: after a restart it rebuilds everything from
// containerd's labels, the member dirs and the coordinator's assignments,
// and re-attaches to running members without restarting them. Stopping the agent never stops a member.
//
// See DESIGN.md for the loops and the restart policy.
package agent
