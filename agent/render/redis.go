package render

import (
	"fmt"
	"strings"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Names of the database files in a redis member's data dir (the engines'
// defaults, spelled out in every redis.conf; sysstats.DataDirSize reads the
// same names).
const (
	RDBFileName = "dump.rdb"
	AOFDirName  = "appendonlydir"
	AOFFileName = "appendonly.aof"
)

// Redis figures fixed by the product (DESIGN.md §3).
const (
	RedisDatabases   = 5   // databases 0-4
	RedisIdleTimeout = 150 // seconds; idle clients are closed after it
)

// RedisInput is everything a redis.conf depends on.
type RedisInput struct {
	// Engine is redis or valkey; empty means redis. Both get the same file
	// today: Valkey 8 accepts every directive below under the same name.
	Engine api.Engine
	// BindAddr is the host's address: redis listens on it only, and its
	// outgoing connections (replication) leave from it (bind-source-addr).
	BindAddr string
	Port     int
	// AnnounceIP is the address announced to the primary and hence to
	// Sentinel (replica-announce-ip); empty means BindAddr.
	AnnounceIP string
	// DataDir is the member's data dir as seen by redis (inside the
	// container when one is used).
	DataDir string
	// Password is the app's: the default user, the one user the app sees.
	Password api.Secret
	// FleetPassword is the addon's fleet credential: redisctl.FleetUser,
	// with which the fleet, replication (masteruser/masterauth) and the
	// sentinels log in.
	FleetPassword api.Secret
	// PlanMemoryMB is the plan's memory: maxmemory, in cache mode or not.
	PlanMemoryMB int
	Settings     api.Settings
	// ReplicaOf is the current primary for a replica, the zero Endpoint for
	// a primary. A member that restarts is rendered with the current
	// primary here, so it never comes back as a primary on its own.
	ReplicaOf Endpoint
	// TLS, when set, makes the member speak TLS only (member TLS).
	TLS *MemberTLS
}

func (in RedisInput) validate() error {
	const f = "redis.conf"
	switch in.Engine {
	case "", api.EngineRedis, api.EngineValkey:
	default:
		return invalidf(f, "unknown engine %q (want %s or %s)", in.Engine, api.EngineRedis, api.EngineValkey)
	}
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
	if err := checkPassword(f, in.Password.Reveal()); err != nil {
		return err
	}
	if err := checkPassword(f, in.FleetPassword.Reveal()); err != nil {
		return fmt.Errorf("fleet credential: %w", err)
	}
	if in.Password.Equal(in.FleetPassword) {
		return invalidf(f, "the fleet credential must differ from the app's password")
	}
	if in.PlanMemoryMB < 1 {
		return invalidf(f, "plan memory %d MB must be at least 1", in.PlanMemoryMB)
	}
	if err := in.TLS.validate(f); err != nil {
		return err
	}
	if _, err := persistence(f, in.Settings); err != nil {
		return err
	}
	if !in.ReplicaOf.IsZero() {
		if err := checkEndpoint(f, "primary", in.ReplicaOf); err != nil {
			return err
		}
		if in.ReplicaOf.Addr == in.BindAddr && in.ReplicaOf.Port == in.Port {
			return invalidf(f, "a redis cannot be a replica of itself (%s)", in.ReplicaOf)
		}
	}
	return nil
}

// persistence normalises the persistence setting ("" is the default, rdb).
// Force TLS and internet access are not redis.conf's: the entrypoint
// terminates TLS (HAProxyAccess).
func persistence(file string, s api.Settings) (string, error) {
	switch s.Persistence {
	case "", api.PersistenceRDB:
		return api.PersistenceRDB, nil
	case api.PersistenceAOF:
		return api.PersistenceAOF, nil
	}
	return "", invalidf(file, "unknown persistence %q (want %s or %s)", s.Persistence, api.PersistenceRDB, api.PersistenceAOF)
}

// settingsParams are the settings' CONFIG parameters (redisctl.Config, the
// one mapping of settings to redis parameters) by name.
func settingsParams(s api.Settings, planMB int) map[string]string {
	m := map[string]string{}
	for _, p := range redisctl.Config(s, planMB) {
		m[p.Name] = p.Value
	}
	return m
}

// saveLines splits the save parameter ("900 1 300 10 …") into one
// `save seconds changes` line per rule.
func saveLines(v string) [][]string {
	f := strings.Fields(v)
	var out [][]string
	for i := 0; i+1 < len(f); i += 2 {
		out = append(out, []string{"save", f[i], f[i+1]})
	}
	return out
}

// Redis renders the redis.conf of one redis member (primary or replica) of an
// addon. The file holds the password: the agent writes it with mode 0600.
//
// Choices, beside the product's figures (databases 5, timeout 150, the app's
// one user, RDB rules, AOF with appendfsync always, cache mode):
//   - Two ACL users (Redis ≥ 6.2 and Valkey accept `user` lines in
//     redis.conf; `&*` needs 6.2). The app's `default` user: every key,
//     channel and command but those that take an instance over
//     (redisctl.AppRules: CONFIG, REPLICAOF/SLAVEOF, SHUTDOWN, DEBUG, ACL
//     but WHOAMI/CAT/GENPASS/HELP, MODULE, FAILOVER, CLUSTER,
//     SAVE/BGSAVE/BGREWRITEAOF, SYNC/PSYNC/REPLCONF, MIGRATE), also from
//     its scripts. The fleet's user (redisctl.FleetUser, +@all) with the
//     fleet credential, which never reaches the app: the agent, the
//     coordinator, replication (masteruser/masterauth, rendered on every
//     node, so a primary demoted by Sentinel authenticates to its new
//     primary), the sentinels (auth-user) and HAProxy's check log in with
//     it. ACL users rather than rename-command: renaming is global, set at
//     start only (no live migration of running addons) and cannot take
//     PSYNC from the app without taking it from the replicas.
//   - maxmemory is the plan memory in both modes. In cache mode the policy is
//     allkeys-lru; otherwise noeviction, so a write at the limit gets Redis's
//     "OOM command not allowed" error and nothing is lost. The container
//     limit is higher (ContainerMemoryLimitBytes) so the kernel never
//     OOM-kills the process.
//   - RDB rules stay on in AOF mode: AOF (appendfsync always) is the
//     durability, the RDB snapshot is the restart fallback and what backups
//     copy; Redis's docs recommend both for PostgreSQL-like safety, and
//     switching rdb<->aof live is then one CONFIG SET (redisctl.LiveChange).
//     appendfsync always is rendered in RDB mode too (it is inert while
//     appendonly is no).
//   - The failover guard's parameters (redisctl.FenceParams,
//     redisctl.PriorityParam; docs/failover.md) are rendered unfenced and
//     promotable: min-replicas-to-write 0, min-replicas-max-lag
//     redisctl.FenceMaxLag, replica-priority 100. A business primary is
//     fenced (min-replicas-to-write 1) and a replica made unpromotable
//     (replica-priority 0) at run time by the agent's guard
//     (agent/promoteguard.go), from what it observes: a fence rendered on
//     would turn every restart, resize or upgrade of the replica into a
//     write outage, and starter plans have no replica at all.
//   - enable-debug-command local: DEBUG (and MODULE) only from a loopback
//     client (127.0.0.1, ::1 or a unix socket; Redis 7's default is no), so
//     the fleet's own tests and an operator on the host can make a member
//     busy on purpose (DEBUG SLEEP, as FleetUser) and prove a busy primary
//     is not failed over. The app's user is refused DEBUG by its ACL from
//     any address.
//   - replica-serve-stale-data yes (the default): apps reach only the primary
//     through the entrypoint; a replica is read by the agent (INFO, backups),
//     which must keep working while its link is down. replica-read-only yes.
//   - repl-diskless-sync-delay 0: a full sync is streamed from a fork
//     (diskless, the 7.0 default) and Redis waits 5 s by default for more
//     replicas to share it; an addon has one replica, so the wait only
//     delayed every initial sync and every resync after a failover by 5 s.
//   - protected-mode no: redis binds one address and always requires auth.
//   - daemonize no and logfile "": the runtime supervises the process and
//     collects stdout.
//   - bind-source-addr (Redis ≥ 7.0) and replica-announce-ip are the host's
//     address: on simulated hosts sharing the loopback interface, redis would
//     otherwise connect from and announce 127.0.0.1.
func Redis(in RedisInput) (string, error) {
	if err := in.validate(); err != nil {
		return "", err
	}
	mode, _ := persistence("redis.conf", in.Settings)
	engine := in.Engine
	if engine == "" {
		engine = api.EngineRedis
	}
	announce := in.AnnounceIP
	if announce == "" {
		announce = in.BindAddr
	}
	role := "primary"
	if !in.ReplicaOf.IsZero() {
		role = "replica of " + in.ReplicaOf.String()
	}

	var c conf
	c.comment(false,
		"redis.conf rendered by cacheplane (agent/render); the agent rewrites it, do not edit.",
		"Holds the addon's password: keep the file mode 0600.",
		"engine: "+string(engine)+"; role at render time: "+role+
			"; persistence: "+mode+"; cache mode: "+onOff(in.Settings.CacheMode)+".",
	)
	c.blank()

	c.comment(false, "Network: the host's address only; auth is always on.")
	c.line("bind", in.BindAddr)
	in.TLS.listen(&c, in.Port)
	c.line("protected-mode", "no")
	c.line("bind-source-addr", in.BindAddr)
	c.line("timeout", itoa(RedisIdleTimeout))
	c.line("tcp-keepalive", "300")
	c.blank()

	c.comment(false, "Process: supervised by the runtime, logs on stdout.")
	c.line("daemonize", "no")
	c.line("supervised", "no")
	c.line("logfile", `""`)
	c.line("loglevel", "notice")
	c.line("always-show-logo", "no")
	c.line("databases", itoa(RedisDatabases))
	c.blank()

	c.comment(false, "Security: the app's one user may not take the instance over (CONFIG, REPLICAOF, SHUTDOWN,",
		"DEBUG, ACL writes, MODULE, FAILOVER, CLUSTER, SAVE/BGSAVE/BGREWRITEAOF, SYNC/PSYNC, MIGRATE);",
		"the fleet's user, whose password the app never sees, runs the instance and its replication.")
	c.line(append([]string{"user", "default", "on", ">" + in.Password.Reveal()}, redisctl.AppRules()...)...)
	c.line(append([]string{"user", redisctl.FleetUser, "on", ">" + in.FleetPassword.Reveal()}, redisctl.FleetRules()...)...)
	c.line("masteruser", redisctl.FleetUser)
	c.line("masterauth", in.FleetPassword.Reveal())
	c.comment(false, "DEBUG only from loopback clients (the fleet's tests and operators).")
	c.line("enable-debug-command", "local")
	c.blank()

	set := settingsParams(in.Settings, in.PlanMemoryMB)
	c.comment(false, "Memory: maxmemory is the plan memory.")
	c.line("maxmemory", set["maxmemory"])
	if in.Settings.CacheMode {
		c.comment(false, "Cache mode: least recently used keys are evicted at the limit.")
	} else {
		c.comment(false, "Not a cache: writes at the limit get an OOM error, no key is ever evicted.")
	}
	c.line("maxmemory-policy", set["maxmemory-policy"])
	c.blank()

	c.comment(false, "Persistence: RDB snapshots always; AOF on top when asked.")
	c.line("dir", in.DataDir)
	c.line("dbfilename", RDBFileName)
	for _, words := range saveLines(set["save"]) {
		c.line(words...)
	}
	c.line("stop-writes-on-bgsave-error", "yes")
	if mode == api.PersistenceAOF {
		c.comment(false, "AOF: every command that changes the dataset is written synchronously.")
	}
	c.line("appendonly", set["appendonly"])
	c.line("appendfilename", `"`+AOFFileName+`"`)
	c.line("appenddirname", `"`+AOFDirName+`"`)
	c.line("appendfsync", set["appendfsync"])
	c.line("aof-use-rdb-preamble", "yes")
	c.blank()

	c.comment(false, "Replication.")
	c.line("replica-announce-ip", announce)
	if !in.ReplicaOf.IsZero() {
		c.line("replicaof", in.ReplicaOf.Addr, itoa(in.ReplicaOf.Port))
	}
	c.comment(false, "One replica per addon: stream a full sync at once instead of waiting 5 s for more.")
	c.line("repl-diskless-sync", "yes")
	c.line("repl-diskless-sync-delay", "0")
	c.line("replica-serve-stale-data", "yes")
	c.line("replica-read-only", "yes")
	c.comment(false, "Failover guard: rendered unfenced and promotable; the agent fences a business primary",
		"(min-replicas-to-write 1) and makes a lagging replica unpromotable (replica-priority 0) at run time.")
	for _, p := range append(redisctl.FenceParams(false), redisctl.PriorityParam(true)) {
		c.line(p.Name, p.Value)
	}
	return c.String(), nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Container memory headroom (see ContainerMemoryLimitBytes).
const (
	// MemoryLimitFactor multiplies the plan memory.
	MemoryLimitFactor = 2
	// MemoryLimitFixedMB is added on top.
	MemoryLimitFixedMB = 64
)

// ContainerMemoryLimitBytes is the cgroup memory limit of a redis member of a
// plan with planMB of memory: 2 × plan + 64 MiB.
//
// maxmemory (= plan) bounds only the dataset as Redis counts it (used_memory,
// less replica output and AOF buffers). The process's RSS, which the cgroup
// counts, exceeds it by allocator fragmentation, the replica output buffers
// and AOF buffers, client query/output buffers (up to 2,000 connections
// through the entrypoint), the replication backlog, Lua and the binary's own
// ~10 MB; and every BGSAVE, AOF rewrite and full sync forks a child in the
// same cgroup whose copy-on-write pages grow with the write rate — Redis's
// docs warn a write-heavy instance "may use up to 2 times the memory
// normally used" while saving. Outside cache mode a full addon must answer
// with an OOM error, never be OOM-killed, so the limit covers that worst
// case: twice the plan, plus a fixed 64 MiB for the small plans where the
// fixed overheads dominate. The limit is a cap, not a reservation: placement
// counts plan memory. Set the swap limit equal to it so redis never swaps.
func ContainerMemoryLimitBytes(planMB int) int64 {
	if planMB < 0 {
		planMB = 0
	}
	return (int64(planMB)*MemoryLimitFactor + MemoryLimitFixedMB) << 20
}
