// Package scheduler owns placement: given a read-only view of the fleet
// (hosts, addons and their members, the plans catalog) and a request, it
// decides on which hosts an addon's members run, which ports they listen on
// and what the addon's entrypoint is.
//
// It is logic only, modelled on Nomad's scheduler: no I/O, no clock, no
// global rand, no goroutines. The same State and Request always give the same
// answer, whatever the order of the slices in State. Callers (the leader's
// provisioning, plan-change and healing controllers) turn a Placement into a
// Raft command; nothing here writes anything.
//
// # Feasibility and ranking
//
// Every host is passed through a chain of checkers, in this order: excluded
// by the request, host not ready (down or draining), anti-affinity (two
// members of one role of one addon never share a host), ports, memory. The
// first checker that refuses a host gives its Reason; Explanation records,
// per member, the reason of every host that was not chosen, so "why not
// placed there" always has an answer.
//
// Feasible hosts are ranked by, in order:
//
//  1. zone spread: fewer members of the same role of this addon already in
//     the host's zone (label "zone"; unlabelled hosts count as no zone). With
//     fewer zones than members the spread falls back to sharing zones.
//  2. addon spread: fewer members (any role) of this addon on the host.
//  3. load (bin spreading): lowest fraction of memory used once the member is
//     added.
//  4. host id, so ties are broken deterministically.
//
// # Memory
//
// A host's capacity is api.Host.MemoryMB. Its use is the sum of the
// reservations of every member on it, whatever the host's state: a redis
// member reserves its plan's memory plus RedisOverheadPercent (copy-on-write
// during BGSAVE, replication and client buffers, fragmentation); a sentinel
// or an haproxy reserves SidecarReserveMB. See Reservation.
//
// # Ports
//
// Every member gets the lowest port of State.Ports (DefaultPortRange when
// unset) not used by any member of any addon on its host. The two haproxy
// members of a business addon listen on the same port number, the lowest
// free on both hosts, unless the addon's entrypoint is a VIP (any free
// port then: the VIP is an address of its own). A starter runs one haproxy,
// on its redis node's host (the host must have room for both); the
// entrypoint of any addon is its first haproxy's address:port. The
// production entrypoint (a VIP, or the kernel data path) is handled by the
// entrypoint layer elsewhere.
//
// # Usage
//
// Counting every addon's members for each placement is O(addons): a burst
// of thousands of provisions on a large fleet then takes minutes. A caller
// placing many addons in a row counts them once (NewUsage, per host:
// memory and ports) and keeps that count as its placements commit
// (Usage.Add, Usage.Remove); with State.Usage set a placement starts from
// it and costs O(hosts). The answers are the same as without it.
//
// # Member ids
//
// Members are named <addonID>-<role>-<n> with n the lowest index not used by
// a member of the addon, so a fresh business addon gets redis-0 (primary),
// redis-1 (replica), sentinel-0..2 and haproxy-0..1, and a replacement never
// reuses the id of a member that still exists.
//
// The scheduler does not own state (the coordinator's FSM does), rollouts or
// health: it only answers where.
package scheduler
