package render

import (
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// HAProxy figures.
const (
	// DefaultMaxConn is how many concurrent client connections an addon's
	// entrypoint accepts (DESIGN.md §3).
	DefaultMaxConn = 2000

	// maxConnMargin: the frontend accepts this many connections above the
	// addon's limit only to close them at once (a clean refusal), and the
	// process accepts as many again for the stats socket and the agent.
	maxConnMargin = 64

	// Health check of the redis members: every 200 ms, one success marks a
	// server up, one failure marks it down (failover through the entrypoint
	// in ~1.5 s after the primary's death, notes/feasibility.md).
	checkInter = "200ms"
	// connectTimeout: a refused or lost connect is retried after
	// min(timeout connect, 1 s); 100 ms took failover from ~3.1 s to ~2.5 s.
	connectTimeout = "100ms"
)

// checkTimeout bounds a role check's wait for an answer on an established
// connection; it is at least SentinelDownAfter. A check only waits that long
// when the member accepted the connection and does not answer: a busy
// primary (a long EVAL, DEBUG SLEEP, a big DEL or KEYS; during the first
// busy-reply-threshold of a script it answers nothing) or a frozen one.
// With fall 1 and on-marked-down shutdown-sessions, a short timeout (it was
// 1.5 s) marked a busy primary down and cut every client's session. Deaths
// do not wait for it: a dead process refuses the connection at once, a lost
// host fails `timeout connect` (100 ms: HAProxy connects checks within
// min(timeout connect, inter)), and a replica answers role:slave then
// closes on QUIT, which fails the check at once. A member frozen longer
// than ~1 s is killed by its agent (agent/liveness.go), which resets the
// check's connection. What it does cost: a check already waiting on a host
// that then vanishes without a reset (a whole host frozen, or packets
// dropped mid-check) keeps that server up until the timeout, and a busy
// primary failed over keeps its sessions through its sleep; neither waits
// for the check: the agent puts a server in MAINT and shuts its sessions the
// moment the sentinels switch away from it (agent/route.go).
var checkTimeout = durationString(SentinelDownAfter)

// busyOrMaster is what the role check expects after INFO replication: the
// primary's role, or -BUSY (redis answers every command but a few with it
// while a script or function runs past busy-reply-threshold; the member's
// role is then unknown, and it was the primary a moment ago).
const busyOrMaster = `role:master|-BUSY`

// durationString writes d for HAProxy ("30s", "1500ms").
func durationString(d time.Duration) string {
	if d%time.Second == 0 {
		return itoa(int(d/time.Second)) + "s"
	}
	return itoa(int(d/time.Millisecond)) + "ms"
}

// HAProxyServer is one redis member behind the entrypoint.
type HAProxyServer struct {
	Name string // member id; letters, digits, '_', '.', '-'
	Addr string
	Port int
	// TLS, when set, is how HAProxy reaches the member over TLS (member
	// TLS): traffic and role checks alike.
	TLS *HAProxyServerTLS
}

// HAProxyServerTLS is how HAProxy reaches a redis member that speaks TLS
// only: it verifies the member's certificate against the cluster CA
// (CAFile, in the member's dir) and the name the addon's certificate
// carries (ServerName, the addon id: redis does not check names, HAProxy
// does with verifyhost).
type HAProxyServerTLS struct {
	CAFile     string
	ServerName string
}

// options are the server line's TLS keywords: traffic (ssl verify
// required ca-file verifyhost) and checks (check-ssl, which the role
// check's `tcp-check connect default` takes from the server line).
func (t *HAProxyServerTLS) options() []string {
	if t == nil {
		return nil
	}
	return []string{"ssl", "verify", "required", "ca-file", t.CAFile, "verifyhost", t.ServerName, "check-ssl"}
}

func (t *HAProxyServerTLS) validate(file, server string) error {
	if t == nil {
		return nil
	}
	if err := checkPath(file, "server "+server+" CA file", t.CAFile); err != nil {
		return err
	}
	return checkName(file, "server "+server+" TLS name", t.ServerName)
}

// HAProxyInput is everything an addon's haproxy.cfg depends on.
type HAProxyInput struct {
	// AddonID names the frontends and the backend (HAProxyFrontend,
	// HAProxyLocalFrontend, HAProxyBackend).
	AddonID string
	// Entrypoint is the addon's stable address and port, where clients
	// connect: the addon's VIP:port, or (an addon without a VIP) this
	// member's own address:port.
	Entrypoint Endpoint
	// Local is this member's own address:port. When it differs from
	// Entrypoint (the entrypoint is a VIP), the clients' frontend binds
	// the VIP with `transparent` (it binds whether or not this host holds
	// the address, so both members of the pair render the same file and a
	// VIP move restarts nothing), and a second small frontend binds Local,
	// always open: the agent's liveness probe and an operator's check
	// connect there, whoever holds the VIP. Zero, or equal to Entrypoint:
	// one frontend on Entrypoint.
	Local Endpoint
	// SourceAddr is this HAProxy's host address: connections to the redis
	// members (traffic and checks) leave from it.
	SourceAddr string
	// Servers are the addon's redis members, primary or replica: the role
	// check routes to the one that says role:master.
	Servers []HAProxyServer
	// Password is the addon's fleet credential: the role check logs in as
	// redisctl.FleetUser.
	Password api.Secret
	// MaxConn is the addon's connection limit; 0 means DefaultMaxConn.
	MaxConn int
	// StatsSocket is the path of the admin-level stats socket (mode 0600)
	// through which the agent drives the routing (set server ... state,
	// shutdown sessions server ..., enable/disable frontend); required.
	StatsSocket string
	// Access, when set, is how clients may reach the entrypoint beyond
	// plaintext on the private network: TLS beside plaintext, force TLS,
	// internet access (haproxyaccess.go).
	Access *HAProxyAccess
}

// splitFrontends reports whether the entrypoint is a VIP served beside a
// frontend on the member's own address.
func (in HAProxyInput) splitFrontends() bool {
	return in.Local != (Endpoint{}) && in.Local != in.Entrypoint
}

// HAProxyFrontend is the name of the clients' frontend (the one bound to the
// entrypoint) of addon id's haproxy.cfg.
func HAProxyFrontend(addonID string) string { return "fe_" + addonID }

// HAProxyLocalFrontend is the name of the frontend on the member's own
// address (rendered when the entrypoint is a VIP).
func HAProxyLocalFrontend(addonID string) string { return "fe_" + addonID + "_local" }

// HAProxyBackend is the name of the backend holding the redis servers.
func HAProxyBackend(addonID string) string { return "be_" + addonID }

// maxUnixPath is the longest unix socket path the kernel takes
// (sizeof(sun_path) - 1).
const maxUnixPath = 107

// localMaxConn bounds the member's own-address frontend: it serves the
// agent's probe and an operator's check, not the app (the second
// maxConnMargin of the process limit covers it).
const localMaxConn = 16

func (in HAProxyInput) validate() error {
	const f = "haproxy.cfg"
	if err := checkName(f, "addon id", in.AddonID); err != nil {
		return err
	}
	if err := checkEndpoint(f, "entrypoint", in.Entrypoint); err != nil {
		return err
	}
	if err := checkIP(f, "source address", in.SourceAddr); err != nil {
		return err
	}
	if len(in.Servers) == 0 {
		return invalidf(f, "no redis server")
	}
	seen := map[string]bool{}
	for _, s := range in.Servers {
		if err := checkName(f, "server name", s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return invalidf(f, "server name %q is used twice", s.Name)
		}
		seen[s.Name] = true
		if err := checkEndpoint(f, "server "+s.Name, Endpoint{s.Addr, s.Port}); err != nil {
			return err
		}
		if err := s.TLS.validate(f, s.Name); err != nil {
			return err
		}
	}
	if err := checkPassword(f, in.Password.Reveal()); err != nil {
		return err
	}
	if in.MaxConn < 0 || in.MaxConn > 1_000_000 {
		return invalidf(f, "max connections %d out of range 0-1000000", in.MaxConn)
	}
	if in.Local != (Endpoint{}) {
		if err := checkEndpoint(f, "own address", in.Local); err != nil {
			return err
		}
	}
	if err := checkPath(f, "stats socket", in.StatsSocket); err != nil {
		return err
	}
	if len(in.StatsSocket) > maxUnixPath {
		return invalidf(f, "stats socket path %q is longer than %d bytes (a unix socket's limit): use a shorter data dir", in.StatsSocket, maxUnixPath)
	}
	return in.Access.validate()
}

// HAProxyGlobalMaxConn is the process-wide maxconn of an entrypoint whose
// addon limit is maxConn (0 = DefaultMaxConn).
func HAProxyGlobalMaxConn(maxConn int) int {
	if maxConn == 0 {
		maxConn = DefaultMaxConn
	}
	return maxConn + 2*maxConnMargin
}

// HAProxyOpenFiles is the RLIMIT_NOFILE an entrypoint with addon limit
// maxConn needs: two sockets per connection (client and server) plus
// listeners, checks and the stats socket. HAProxy raises its own limit when
// it runs as root; otherwise the unit or container must grant this much,
// or HAProxy refuses to start ("Cannot raise FD limit").
func HAProxyOpenFiles(maxConn int) uint64 {
	return uint64(2*HAProxyGlobalMaxConn(maxConn) + 256)
}

// HAProxy renders the haproxy.cfg of one entrypoint HAProxy of an addon. The
// file holds the password (in the health check): the agent writes it with
// mode 0600. HAProxy runs in the foreground (haproxy -db -f FILE, or -W for
// reloads) and logs server state changes on stdout.
//
// Routing: TCP mode, one backend with every redis member. Two things must
// both hold for a server to get connections:
//
//   - The agent (agent/route.go, through the stats socket) has it `ready`:
//     it follows the addon's sentinels (+switch-master, and a majority ask
//     as a safety net) and keeps every server but the primary they agree on
//     in MAINT with its sessions shut. On a switch the old primary's
//     sessions are cut at once, so a primary that was busy or cut off
//     through a failover (and wakes up as a stray master) never gets a
//     write. While no majority is known the agent changes nothing, so the
//     file's own state (every server ready) and the role check decide,
//     which is also how a freshly started HAProxy routes until the agent
//     has spoken.
//   - Its role check passes: a tcp-check authenticates, asks INFO
//     replication and sends QUIT right behind it, so a replica's check
//     fails as soon as it answers role:slave and closes (no wait for the
//     check timeout). A busy primary is not marked down: its check waits up
//     to checkTimeout (Sentinel's down-after) for the answer, and a script
//     running past redis's busy-reply-threshold (5 s), which makes redis
//     answer INFO with -BUSY, passes the check too (busyOrMaster): without
//     that, every session of a primary running a 7 s script was cut at
//     5.0 s (measured). Which busy member routes is the agent's MAINT
//     state's business, not the check's: a busy replica is never the
//     sentinels' primary.
//
// `balance first` sends every connection to the first usable server, so
// even a moment with two masters ready never splits one app's writes.
// on-marked-down shutdown-sessions cuts the sessions of a primary whose
// check fails (its process died).
//
// Frontends: with a VIP entrypoint (Local differs from Entrypoint) both
// members of the pair render the same file: the clients' frontend binds
// VIP:port with `transparent` (IP_TRANSPARENT, or IP_FREEBIND without
// CAP_NET_ADMIN: the bind succeeds whether or not the address is on this
// host), and the agent disables it on the member that does not hold the VIP
// and enables it on the holder (`disable frontend` releases the port,
// `enable frontend` binds it again; established sessions are kept). A VIP
// move is then an address move plus one runtime command: HAProxy is not
// restarted. A second frontend binds the member's own address:port (at
// most localMaxConn connections, same backend) and is never disabled: it is
// where the agent's liveness probe connects. Without a VIP there is one
// frontend, on the member's own address.
//
// Connection limit: the clients' frontend accepts up to MaxConn+64
// connections and closes (tcp-request connection reject) every one beyond
// MaxConn the moment it is accepted: the next client is refused cleanly
// instead of waiting in the kernel's backlog, which is what HAProxy does at
// its maxconn. The process maxconn is higher still (HAProxyGlobalMaxConn),
// for the stats socket and the own-address frontend.
//
// Timeouts: there is no client or server inactivity timeout. Redis itself
// closes idle clients after `timeout 150` but never a client blocked in
// BLPOP/XREAD BLOCK or a Pub/Sub subscriber; any finite proxy timeout would
// (HAProxy's maximum is ~24.8 days; 30 s was seen cutting a 40 s BLPOP),
// and apps must see Redis's semantics. Dead peers are found by TCP
// keepalive on both sides instead (probes after 60 s idle, every 10 s,
// 3 failures: a vanished client or server frees its slot within ~90 s),
// and half-closed connections by client-fin/server-fin. HAProxy warns
// "missing timeouts" at start for this; it is intended. The connect timeout
// is 100 ms (members are on the local network) and retries redispatch.
func HAProxy(in HAProxyInput) (string, error) {
	if err := in.validate(); err != nil {
		return "", err
	}
	limit := in.MaxConn
	if limit == 0 {
		limit = DefaultMaxConn
	}
	fe, be := HAProxyFrontend(in.AddonID), HAProxyBackend(in.AddonID)
	split := in.splitFrontends()

	var c conf
	c.comment(false,
		"haproxy.cfg rendered by cacheplane (agent/render) for addon "+in.AddonID+"; do not edit.",
		"Holds the addon's password (health check): keep the file mode 0600.",
	)
	c.blank()
	c.line("global")
	c.indented("maxconn", itoa(HAProxyGlobalMaxConn(limit)))
	c.indented("log", "stdout", "format", "raw", "daemon", "notice")
	c.comment(true, "The agent routes through it: servers other than the sentinels' primary in MAINT,",
		"the clients' frontend enabled only on the VIP holder.")
	c.indented("stats", "socket", in.StatsSocket, "mode", "600", "level", "admin")
	c.blank()
	c.line("defaults")
	c.indented("mode", "tcp")
	c.indented("log", "global")
	c.indented("timeout", "connect", connectTimeout)
	c.comment(true, "A check waits this long only on a member that accepted it and does not answer (busy):",
		"as long as Sentinel's down-after, so a busy primary keeps its sessions.")
	c.indented("timeout", "check", checkTimeout)
	c.comment(true,
		"No timeout client/server on purpose: a BLPOP or an idle subscriber stays",
		"open as long as Redis keeps it; TCP keepalive finds dead peers.",
	)
	c.indented("timeout", "client-fin", "30s")
	c.indented("timeout", "server-fin", "30s")
	c.blank()
	c.line("frontend", fe)
	if split {
		c.comment(true, "The addon's VIP, bound whether or not this host holds it (freebind);",
			"the agent enables this frontend on the holder only.")
		c.indented("bind", in.Entrypoint.String(), "transparent")
	} else {
		c.indented("bind", in.Entrypoint.String())
	}
	c.indented("maxconn", itoa(limit+maxConnMargin))
	c.comment(true, "At most "+itoa(limit)+" clients: the next one is accepted and closed at once.")
	c.indented("tcp-request", "connection", "reject", "if", "{", "fe_conn", "gt", itoa(limit), "}")
	clientKeepalive(&c)
	in.Access.clientRules(&c, in.AddonID, false)
	c.indented("default_backend", be)
	c.blank()
	in.Access.frontends(&c, in, limit)
	if split {
		c.line("frontend", HAProxyLocalFrontend(in.AddonID))
		c.comment(true, "This member's own address, never disabled: the agent's liveness probe connects here.")
		c.indented("bind", in.Local.String())
		c.indented("maxconn", itoa(localMaxConn))
		clientKeepalive(&c)
		in.Access.clientRules(&c, in.AddonID, false)
		c.indented("default_backend", be)
		c.blank()
	}
	c.line("backend", be)
	c.indented("balance", "first")
	c.indented("retries", "3")
	c.indented("option", "redispatch", "1")
	c.indented("option", "srvtcpka")
	c.indented("srvtcpka-idle", "60s")
	c.indented("srvtcpka-intvl", "10s")
	c.indented("srvtcpka-cnt", "3")
	c.indented("source", bracketIPv6(in.SourceAddr))
	c.comment(true, "Up only while the member answers role:master; QUIT right after INFO so a replica fails at once.",
		"-BUSY (a script past busy-reply-threshold) keeps it up: busy is not dead.",
		"The agent also keeps every server but the sentinels' primary in MAINT.")
	c.indented("option", "tcp-check")
	if memberTLS(in.Servers) {
		c.comment(true, "Member TLS: the check connects as the server line says (ssl, verify, check-ssl).")
		c.indented("tcp-check", "connect", "default")
	} else {
		c.indented("tcp-check", "connect")
	}
	c.indented("tcp-check", "send", `"AUTH `+redisctl.FleetUser+` `+in.Password.Reveal()+`\r\n"`)
	c.indented("tcp-check", "expect", "string", "+OK")
	c.indented("tcp-check", "send", `"INFO replication\r\n"`)
	c.indented("tcp-check", "send", `"QUIT\r\n"`)
	c.indented("tcp-check", "expect", "rstring", busyOrMaster)
	c.comment(true, "The agent adds and deletes servers at run time (HAProxyAddServer) when the addon's",
		"redis members change; this list is what a restart starts from.")
	for _, s := range in.Servers {
		c.indented(append(append([]string{"server", s.Name, Endpoint{s.Addr, s.Port}.String()}, serverOptions...), s.TLS.options()...)...)
	}
	return c.String(), nil
}

// memberTLS reports whether the servers speak TLS (member TLS: all of an
// addon's members do, or none).
func memberTLS(servers []HAProxyServer) bool {
	for _, s := range servers {
		if s.TLS != nil {
			return true
		}
	}
	return false
}

// serverOptions are every redis server's check and failure options, in the
// file and at run time alike (a server added through the runtime API
// inherits no default-server line).
var serverOptions = []string{"check", "inter", checkInter, "rise", "1", "fall", "1", "on-marked-down", "shutdown-sessions"}

// HAProxyServerName is the name of the server for a redis member at
// addr:port: derived from the address, so a server keeps its name whatever
// else the backend holds, and the runtime API can add and delete servers
// by it (letters, digits, '_', '.', '-').
func HAProxyServerName(addr string, port int) string {
	r := strings.NewReplacer(":", "_", "[", "", "]", "")
	return "redis_" + r.Replace(addr) + "_" + itoa(port)
}

// HAProxyAddServer is the runtime-API command that adds server s to
// backend be with the same options as the file's servers. HAProxy adds it
// in maintenance, checks off: `enable health` then lets its role check run,
// and the agent's routing readies it when it is the primary.
func HAProxyAddServer(be string, s HAProxyServer) []string {
	return []string{
		strings.Join(append(append([]string{"add", "server", be + "/" + s.Name, Endpoint{s.Addr, s.Port}.String()}, serverOptions...), s.TLS.options()...), " "),
		"enable health " + be + "/" + s.Name,
	}
}

// HAProxyShape is the file of in with its server list left out: what needs
// a new HAProxy process when it changes (the servers change at run time).
func HAProxyShape(in HAProxyInput) (string, error) {
	if err := checkPassword("haproxy.cfg", in.Password.Reveal()); err != nil {
		return "", err
	}
	var t *HAProxyServerTLS
	if len(in.Servers) > 0 {
		t = in.Servers[0].TLS // member TLS is the addon's, fixed at creation
	}
	in.Servers = []HAProxyServer{{Name: "shape", Addr: "127.0.0.1", Port: 1, TLS: t}}
	// The check's credential is not part of the shape either: an addon
	// given its fleet credential (redisctl.ApplyACL, live) keeps its
	// running HAProxy, whose check logged in as the app and still may
	// (INFO is a data-side command); the file is rewritten for its next
	// start.
	in.Password = api.NewSecret("shape")
	return HAProxy(in)
}

// clientKeepalive finds vanished clients of a frontend (see HAProxy).
func clientKeepalive(c *conf) {
	c.indented("option", "clitcpka")
	c.indented("clitcpka-idle", "60s")
	c.indented("clitcpka-intvl", "10s")
	c.indented("clitcpka-cnt", "3")
}

// bracketIPv6 writes an IPv6 address the way HAProxy's address parser reads
// it without a port ("[::1]"; a bare "::1" is taken as host ":" port).
func bracketIPv6(addr string) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]"
	}
	return addr
}
