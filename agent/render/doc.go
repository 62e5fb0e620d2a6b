// Package render owns the configuration files of an addon's members: the
// redis.conf of a Redis or Valkey node, the sentinel.conf of a Sentinel and
// the haproxy.cfg of an entrypoint HAProxy, plus the figures derived from a
// plan that the agent needs next to them (the container memory limit of a
// redis member). The settings lines of redis.conf (appendonly, appendfsync,
// save, maxmemory, maxmemory-policy) come from redisctl.Config, the one
// mapping of settings to redis parameters, which also drives the live
// change (redisctl.LiveChange) and the coordinator's check.
//
// Member TLS (MemberTLS, HAProxyServerTLS; membertls.go): the TLS-only
// lines of redis.conf and sentinel.conf and HAProxy's verified TLS to the
// servers, for an addon created with member TLS.
//
// It is pure: every function takes plain structs and returns the file content
// or an error. It does no I/O, keeps no state and reads no clock; the agent
// writes the files (mode 0600: each of them holds the addon's fleet
// credential, redis.conf the app's password too: docs/security.md),
// starts the processes and decides when to re-render. Errors never contain
// the password.
//
// What the files say, and why, is documented beside each directive in
// redis.go, sentinel.go and haproxy.go; the golden files in testdata/ show the
// exact output (regenerate them with `go test ./agent/render -update`), and
// the tests start the real redis-server, redis-sentinel and haproxy with
// rendered files to prove every directive is accepted by the installed
// versions (Redis 7.0.15, HAProxy 2.6; Valkey 8 when valkey-server is
// installed).
package render
