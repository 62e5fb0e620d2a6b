// Package runtime runs a host's members (redis-server, redis-sentinel,
// haproxy) as containers for the node agent, behind the small Runtime
// interface, and holds its containerd driver.
//
// It owns: turning a Spec (image, argv, data dir, memory limit) into a
// running container; stopping (SIGTERM, grace, SIGKILL) and destroying it;
// reporting state, resource figures and task exits; live memory-limit
// changes; importing the locally built images (see packaging/) when a
// reference is missing; and keeping every fact a restarted agent needs in
// containerd itself (container labels: addon, member, role, spec hash,
// start time), so that a new driver instance re-attaches to running tasks
// without restarting them. Close never stops a task.
//
// It does not own: what to run (the agent renders configs and argv, see
// agent/render), when to run it (the agent's reconcile loop), redis-level
// health, or failover. Exits reports a member's death; reacting to it is
// the agent's business.
//
// The conformance suite every driver passes is in runtimetest.
package runtime
