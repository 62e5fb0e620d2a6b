// Package cli owns cacheplane's command line: the operator commands
// (addons-plans, addons-add, addons, addons-remove, env, hosts, operations,
// members, join, leave, ...), which speak only the api package's client to
// the admin socket. It holds no state and does not import the coordinator:
// the daemon's `serve` command is package cli/serve, which only
// cmd/coordinator registers (AddDaemonCommand), so the cacheplane binary
// links no Raft and no bolt.
package cli
