// Package cli owns cacheplane's command line: the operator commands
// (addons-plans, addons-add, addons, addons-remove, env, hosts, operations,
// members, join, leave), which speak only the api package's client to the
// admin socket, and the daemon's `serve` command. It holds no state.
package cli
