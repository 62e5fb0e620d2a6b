package render

import (
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Sentinel figures.
const (
	// SentinelQuorum is how many of an addon's three sentinels must agree
	// that the primary is down.
	SentinelQuorum = 2

	// SentinelDownAfter is down-after-milliseconds: how long a primary may
	// leave Sentinel's PINGs unanswered before Sentinel calls it down.
	// Sentinel is the safety net, not the detector. A busy primary (a long
	// EVAL or FUNCTION, DEBUG SLEEP, a big DEL, KEYS or a synchronous
	// FLUSHALL) answers its PING late, or with -BUSY, and Sentinel counts
	// that as down: at 1500 ms a 2.2 s script caused a failover and cut
	// every session (shared/notes/feasibility.md, issue 10). The fleet
	// detects deaths with certain knowledge instead, at once: the agent
	// forces the failover when the runtime reports the primary's process
	// dead (agent/safety.go) or when the member stops serving
	// (agent/liveness.go: frozen, or its own address refusing
	// connections), and the coordinator does when it has lost the
	// primary's host. Sentinel's own detection only acts when the whole
	// control plane is gone, and a busy primary gets 30 s before it does.
	//
	// Derived from it inside Sentinel: the PING period stays 1 s
	// (min(down-after, 1 s)); a replica is not promoted when its link to
	// the primary has been down for more than 10 × down-after (now 300 s,
	// was 15 s), so that bound on a stale replica's promotion is Sentinel's
	// no longer: a caller forcing a failover must look at the replica's
	// link itself. The spurious second failover seen at 500-1000 ms
	// (Sentinel flagging the just-promoted primary down exactly down-after
	// after the switch) cannot happen at 30 s.
	SentinelDownAfter = 30 * time.Second

	// SentinelFailoverTimeout is failover-timeout (independent of
	// down-after). Sentinel's default (3 min)
	// is tuned for large replica sets. Ours is one replica on the same
	// network: the promotion is seen within about 1 s (Sentinel polls a
	// replica's INFO every second during a failover) and reconfiguring the
	// one other node is immediate, so 10 s is a wide margin on a loaded
	// host. It also bounds the bad cases: an aborted or spurious failover
	// blocks the next automatic one for 2 × failover-timeout (20 s, not
	// 6 min), and a replica found following the wrong primary is corrected
	// after failover-timeout.
	SentinelFailoverTimeout = 10 * time.Second

	// SentinelParallelSyncs is parallel-syncs: one replica resyncs at a time.
	SentinelParallelSyncs = 1
)

// SentinelInput is everything a sentinel.conf depends on.
type SentinelInput struct {
	// BindAddr is the host's address: the sentinel listens on it, connects
	// from it (bind-source-addr) and announces it (unless AnnounceIP).
	BindAddr   string
	Port       int
	AnnounceIP string // empty means BindAddr
	// DataDir is the sentinel's working directory.
	DataDir string
	// MasterName names the monitored primary; the addon id.
	MasterName string
	// Primary is the addon's primary at render time.
	Primary Endpoint
	// Password is the addon's fleet credential: the sentinel requires it
	// (requirepass), logs in with it to the other sentinels (sentinel-user
	// default, sentinel-pass) and, as redisctl.FleetUser, to the redis
	// members (auth-user, auth-pass).
	Password api.Secret
	// TLS, when set, makes the sentinel listen on TLS only and reach the
	// members and the other sentinels over TLS (member TLS).
	TLS *MemberTLS
}

func (in SentinelInput) validate() error {
	const f = "sentinel.conf"
	if err := checkIP(f, "bind address", in.BindAddr); err != nil {
		return err
	}
	if err := checkPort(f, "port", in.Port); err != nil {
		return err
	}
	if in.AnnounceIP != "" {
		if err := checkIP(f, "announce ip", in.AnnounceIP); err != nil {
			return err
		}
	}
	if err := checkPath(f, "data dir", in.DataDir); err != nil {
		return err
	}
	if err := checkName(f, "master name", in.MasterName); err != nil {
		return err
	}
	if err := checkEndpoint(f, "primary", in.Primary); err != nil {
		return err
	}
	if err := in.TLS.validate(f); err != nil {
		return err
	}
	return checkPassword(f, in.Password.Reveal())
}

// Sentinel renders the sentinel.conf of one of an addon's three sentinels.
// The file holds the password: the agent writes it with mode 0600.
//
// Sentinel rewrites its own config file (its id, the current primary, the
// known replicas and sentinels, the epochs), and refuses to start when it
// cannot write it: the agent writes the file once, when the member is
// created, into a writable place, and never overwrites it afterwards — a
// re-rendered file would make the sentinel forget the current epoch and
// primary. Changing the primary by hand goes through SENTINEL commands, not
// through this file.
//
// Hostnames are off (resolve-hostnames/announce-hostnames no): every address
// is an IP, so a failover never depends on DNS. announce-ip and
// bind-source-addr are the host's address: on simulated hosts sharing the
// loopback interface the sentinels would otherwise record 127.0.0.1 for each
// other. The sentinel requires the fleet credential (requirepass): without
// it anyone reaching its port could re-point the addon's primary (SENTINEL
// SET, REMOVE, MONITOR, FAILOVER). The three sentinels log in to each other
// as `default` with it (sentinel-user, sentinel-pass), and to the redis
// members as the fleet's user (auth-user, auth-pass).
func Sentinel(in SentinelInput) (string, error) {
	if err := in.validate(); err != nil {
		return "", err
	}
	announce := in.AnnounceIP
	if announce == "" {
		announce = in.BindAddr
	}
	name := in.MasterName

	var c conf
	c.comment(false,
		"sentinel.conf rendered by cacheplane (agent/render), written once at create:",
		"redis-sentinel rewrites it from then on. Holds the addon's password: mode 0600.",
	)
	c.blank()
	c.line("bind", in.BindAddr)
	in.TLS.listen(&c, in.Port)
	c.line("protected-mode", "no")
	c.line("bind-source-addr", in.BindAddr)
	c.line("daemonize", "no")
	c.line("logfile", `""`)
	c.line("dir", in.DataDir)
	c.comment(false, "Only the fleet talks to a sentinel, and sentinels to each other, with the fleet credential.")
	c.line("requirepass", in.Password.Reveal())
	c.line("sentinel", "sentinel-user", redisctl.SentinelUser)
	c.line("sentinel", "sentinel-pass", in.Password.Reveal())
	c.blank()
	c.line("sentinel", "announce-ip", announce)
	c.line("sentinel", "resolve-hostnames", "no")
	c.line("sentinel", "announce-hostnames", "no")
	c.line("sentinel", "deny-scripts-reconfig", "yes")
	c.blank()
	c.line("sentinel", "monitor", name, in.Primary.Addr, itoa(in.Primary.Port), itoa(SentinelQuorum))
	c.line("sentinel", "auth-user", name, redisctl.FleetUser)
	c.line("sentinel", "auth-pass", name, in.Password.Reveal())
	c.comment(false, "30 s: the safety net only. A busy primary answers late and is not dead; the agent and the",
		"coordinator force the failover at once on a death they know of (agent/render/sentinel.go).")
	c.line("sentinel", "down-after-milliseconds", name, itoa(int(SentinelDownAfter/time.Millisecond)))
	c.comment(false, "10 s: one replica on a local network; bounds the 2 x failover-timeout block after a failed attempt.")
	c.line("sentinel", "failover-timeout", name, itoa(int(SentinelFailoverTimeout/time.Millisecond)))
	c.line("sentinel", "parallel-syncs", name, itoa(SentinelParallelSyncs))
	return c.String(), nil
}
