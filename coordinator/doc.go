// Package coordinator owns cacheplane's decisions and its single source of
// truth: a hashicorp/raft cluster (raft-boltdb/v2 log and stable store, file
// snapshots) whose FSM holds the whole desired and observed state — hosts,
// plans and engine catalogs, addons, operations with their steps, backup
// records, the coordinator members' addresses, and the daemon identities
// (the cluster CA, join tokens by the hash of their secret, each host's
// agent certificate serial: identity.go).
//
// It serves the admin API (HTTP/JSON on a 0600 unix socket, writes and
// consistent reads forwarded to the leader) and the peer API (HTTPS, mutual
// TLS with certificates of the cluster CA: agents reach only their own
// host's agent routes, members forward admin calls; joins with a token;
// plain HTTP too, for older members and agents, on a member of a cluster
// made before identities until it is secured: peerplain.go), runs Raft
// over mutual TLS (raftstream.go), keeps its own member certificate, and
// runs the leader-only controllers:
// hosts (liveness), topology (primaries, strays, forced failovers, VIPs),
// the operation engine (the I/O half; its decisions are package operation),
// backups (schedule and retention), the fleet credential, the addons'
// server certificates (addoncert.go) and protocol levels.
// It brings back a cluster that lost its majority from one surviving member
// (recover.go: Raft stopped, its configuration recovered, started again in
// the same process). It serves the web dashboard on its own listener
// (dashboard.go: login tokens on the admin socket, the admin API behind the
// dashboard's session, audited by session; the figures history the charts
// draw).
//
// It does not decide steps (package coordinator/operation does, as pure
// functions), place members (package scheduler), talk redis or sentinel
// protocol (package redisctl), run containers (package agent) or store
// dumps (package backupstore); the dashboard's sessions and pages are
// package dashboard.
// See DESIGN.md beside this file.
package coordinator
