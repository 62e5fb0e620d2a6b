// Package coordinator owns cacheplane's decisions and its single source of
// truth: a hashicorp/raft cluster (raft-boltdb/v2 log and stable store, file
// snapshots) whose FSM holds the whole desired and observed state — hosts,
// plans and engine catalogs, addons, operations with their steps, backup
// records and the coordinator members' addresses.
//
// It serves the admin API (HTTP/JSON on a 0600 unix socket, writes and
// consistent reads forwarded to the leader) and the peer API (HTTP on TCP,
// used for forwarding and joins), and runs the leader-only controllers.
//
// It does not place members (package scheduler does, as pure functions), run
// containers (package agent does) or store dumps (package backupstore does).
// See DESIGN.md beside this file.
package coordinator
