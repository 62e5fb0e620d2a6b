package render

// Tests that start the real binaries with rendered files: redis-server,
// redis-sentinel and haproxy (and valkey-server when installed). Each test
// skips when its binary is absent. Processes run in their own process group
// on free ports of 127.0.0.1-3 and are killed (with any fork child) at the
// end of the test; every wait polls with a deadline.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

func needBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it): %v", name, err)
	}
	return p
}

// freePort returns a port free on addr right now.
func freePort(t *testing.T, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a process started by a test, killed with its process group at the
// end of the test.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // valid once done is closed
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(bin), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
		}
		out := p.out.String()
		for _, pw := range []string{testPassword, testFleet} {
			if strings.Contains(out, pw) {
				t.Errorf("%s printed a password", p.name)
				out = strings.ReplaceAll(out, pw, "<password>")
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, out)
		}
	})
	return p
}

// kill ends the process group at once and waits for the process.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor polls check until it returns nil, the deadline passes or one of
// procs exits.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() error, procs ...*proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	start := time.Now()
	for {
		if err = check(); err == nil {
			if testing.Verbose() {
				t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
			}
			return
		}
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("%s: %s exited (%v):\n%s", what, p.name, p.err, p.out.String())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

// newClient logs in with password alone (AUTH password: the default user,
// the app's on a redis member, the sentinels' own).
func newClient(t *testing.T, addr, password string) *redis.Client {
	t.Helper()
	return newClientAs(t, addr, "", password)
}

// fleetClient logs in to a redis member as the fleet's user.
func fleetClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	return newClientAs(t, addr, redisctl.FleetUser, testFleet)
}

func newClientAs(t *testing.T, addr, user, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                     addr,
		Username:                 user,
		Password:                 password,
		MaxRetries:               -1,
		DialTimeout:              time.Second,
		ReadTimeout:              2 * time.Second,
		WriteTimeout:             2 * time.Second,
		PoolSize:                 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type runningRedis struct {
	in     RedisInput
	proc   *proc
	client *redis.Client
	addr   string
}

// startRedis renders in (with a free port on in.BindAddr and a temp data
// dir), starts bin on it and waits until it answers an authenticated PING.
func startRedis(t *testing.T, bin string, in RedisInput) *runningRedis {
	t.Helper()
	dir := t.TempDir()
	in.DataDir = dir
	if in.Port == 0 {
		in.Port = freePort(t, in.BindAddr)
	}
	if in.Password.IsZero() {
		in.Password = api.NewSecret(testPassword)
	}
	if in.FleetPassword.IsZero() {
		in.FleetPassword = api.NewSecret(testFleet)
	}
	conf, err := Redis(in)
	if err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, dir, "redis.conf", conf)
	p := startProc(t, bin, file)
	r := &runningRedis{in: in, proc: p, addr: Endpoint{in.BindAddr, in.Port}.String()}
	r.client = fleetClient(t, r.addr)
	waitFor(t, 10*time.Second, p.name+" answers", func() error {
		return r.client.Ping(context.Background()).Err()
	}, p)
	return r
}

func configGet(t *testing.T, c *redis.Client, param string) string {
	t.Helper()
	m, err := c.ConfigGet(context.Background(), param).Result()
	if err != nil {
		t.Fatalf("CONFIG GET %s: %v", param, err)
	}
	return m[param]
}

func infoField(t *testing.T, c *redis.Client, section, field string) string {
	t.Helper()
	s, err := c.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatalf("INFO %s: %v", section, err)
	}
	return parseInfo(s)[field]
}

func parseInfo(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// engineBinary finds a server binary: on PATH (redis from Debian), else
// valkey-server from the bookworm-backports package make deps unpacks for
// the images (it runs on the host's libraries).
func engineBinary(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if name == "valkey-server" {
		dev := filepath.Join("..", "..", ".dev")
		if imgs := os.Getenv("CACHEPLANE_IMAGES"); imgs != "" {
			dev = filepath.Dir(imgs)
		}
		p := filepath.Join(dev, "debian", "roots", "valkey-8.0.1", "usr", "bin", "valkey-server")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return needBinary(t, name)
}

func TestRealRedisAcceptsConfig(t *testing.T) {
	engines := []struct {
		engine api.Engine
		bin    string
	}{{api.EngineRedis, "redis-server"}, {api.EngineValkey, "valkey-server"}}
	settings := []struct {
		name string
		s    api.Settings
	}{
		{"rdb", api.Settings{Persistence: api.PersistenceRDB}},
		{"aof", api.Settings{Persistence: api.PersistenceAOF}},
		{"cache", api.Settings{Persistence: api.PersistenceRDB, CacheMode: true}},
	}
	for _, e := range engines {
		for _, s := range settings {
			t.Run(string(e.engine)+"-"+s.name, func(t *testing.T) {
				bin := engineBinary(t, e.bin)
				r := startRedis(t, bin, RedisInput{
					Engine: e.engine, BindAddr: "127.0.0.1", PlanMemoryMB: 64, Settings: s.s,
				})
				ctx := context.Background()
				want := map[string]string{
					"databases":                "5",
					"timeout":                  "150",
					"bind":                     "127.0.0.1",
					"bind-source-addr":         "127.0.0.1",
					"replica-announce-ip":      "127.0.0.1",
					"maxmemory":                strconv.Itoa(64 << 20),
					"save":                     "900 1 300 10 60 10000",
					"dbfilename":               "dump.rdb",
					"appenddirname":            "appendonlydir",
					"appendfilename":           "appendonly.aof",
					"appendfsync":              "always",
					"protected-mode":           "no",
					"daemonize":                "no",
					"replica-serve-stale-data": "yes",
					"replica-read-only":        "yes",
					"min-replicas-to-write":    "0",
					"repl-diskless-sync":       "yes",
					"repl-diskless-sync-delay": "0",
					"dir":                      r.in.DataDir,
					"maxmemory-policy":         "noeviction",
					"appendonly":               "no",
				}
				if s.s.CacheMode {
					want["maxmemory-policy"] = "allkeys-lru"
				}
				if s.s.Persistence == api.PersistenceAOF {
					want["appendonly"] = "yes"
				}
				for param, v := range want {
					if got := configGet(t, r.client, param); got != v {
						t.Errorf("CONFIG GET %s = %q, want %q", param, got, v)
					}
				}

				// Two users: the fleet's, with every right, and the app's,
				// confined. The engine prints the app's rules in its own
				// normalised form (docs/security.md has them): check what
				// they do, not how they print.
				sum := sha256.Sum256([]byte(testFleet))
				acl, err := r.client.Do(ctx, "ACL", "LIST").StringSlice()
				if err != nil {
					t.Fatal(err)
				}
				wantFleet := "user cacheplane on #" + hex.EncodeToString(sum[:]) + " ~* &* +@all"
				appSum := sha256.Sum256([]byte(testPassword))
				if len(acl) != 2 || strings.Replace(acl[0], " sanitize-payload", "", 1) != wantFleet ||
					!strings.HasPrefix(strings.Replace(acl[1], " sanitize-payload", "", 1), "user default on #"+hex.EncodeToString(appSum[:])+" ~* &* +@all -") {
					t.Errorf("ACL LIST = %q, want the fleet's user %q and the app's", acl, wantFleet)
				}
				t.Logf("ACL LIST of %s: %q", e.engine, acl)
				app := newClient(t, r.addr, testPassword)
				for _, cmd := range [][]any{{"CONFIG", "SET", "dir", "/tmp"}, {"REPLICAOF", "127.0.0.1", "1"}, {"ACL", "LIST"},
					{"BGSAVE"}, {"SHUTDOWN"}, {"PSYNC", "?", "-1"}, {"FAILOVER"}, {"DEBUG", "SLEEP", "0"}} {
					if err := app.Do(ctx, cmd...).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
						t.Errorf("the app's %v: %v, want NOPERM", cmd, err)
					}
				}
				if err := app.Set(ctx, "app-key", "v", 0).Err(); err != nil {
					t.Errorf("the app's SET: %v", err)
				}

				// No access without the password, none with a wrong one.
				anon := newClient(t, r.addr, "")
				if err := anon.Set(ctx, "k", "v", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
					t.Errorf("unauthenticated SET: %v, want NOAUTH", err)
				}
				wrong := newClient(t, r.addr, "wrong-password")
				if err := wrong.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
					t.Errorf("PING with a wrong password: %v, want WRONGPASS", err)
				}

				// Databases 0-4 exist, 5 does not.
				if err := r.client.Do(ctx, "SELECT", "4").Err(); err != nil {
					t.Errorf("SELECT 4: %v", err)
				}
				if err := r.client.Do(ctx, "SELECT", "5").Err(); err == nil {
					t.Error("SELECT 5 succeeded")
				}
			})
		}
	}
}

// TestRealMaxmemory proves the two memory behaviours: outside cache mode a
// write past maxmemory gets Redis's OOM error and no key is evicted; in cache
// mode keys are evicted and writes succeed.
func TestRealMaxmemory(t *testing.T) {
	bin := needBinary(t, "redis-server")
	ctx := context.Background()
	value := strings.Repeat("x", 64<<10)
	const planMB = 4

	t.Run("noeviction", func(t *testing.T) {
		r := startRedis(t, bin, RedisInput{BindAddr: "127.0.0.1", PlanMemoryMB: planMB, Settings: api.DefaultSettings()})
		written := 0
		var err error
		for i := 0; i < 1000; i++ {
			if err = r.client.Set(ctx, fmt.Sprintf("k%d", i), value, 0).Err(); err != nil {
				break
			}
			written++
		}
		if err == nil || !strings.HasPrefix(err.Error(), "OOM ") {
			t.Fatalf("after %d writes of 64 KiB into %d MB: %v, want an OOM error", written, planMB, err)
		}
		if written == 0 {
			t.Fatal("the first write already failed: maxmemory below the empty server's memory")
		}
		if n, err := r.client.DBSize(ctx).Result(); err != nil || n != int64(written) {
			t.Errorf("DBSIZE = %d (%v), want %d: a key was lost", n, err, written)
		}
		if ev := infoField(t, r.client, "stats", "evicted_keys"); ev != "0" {
			t.Errorf("evicted_keys = %s, want 0", ev)
		}
		// Reads and deletes still work at the limit.
		if err := r.client.Get(ctx, "k0").Err(); err != nil {
			t.Errorf("GET at the limit: %v", err)
		}
		if err := r.client.Del(ctx, "k0").Err(); err != nil {
			t.Errorf("DEL at the limit: %v", err)
		}
	})

	t.Run("cache-mode", func(t *testing.T) {
		r := startRedis(t, bin, RedisInput{BindAddr: "127.0.0.1", PlanMemoryMB: planMB,
			Settings: api.Settings{Persistence: api.PersistenceRDB, CacheMode: true}})
		const n = 3 * planMB * 16 // three times the plan in 64 KiB values
		for i := 0; i < n; i++ {
			if err := r.client.Set(ctx, fmt.Sprintf("k%d", i), value, 0).Err(); err != nil {
				t.Fatalf("write %d in cache mode: %v", i, err)
			}
		}
		ev, _ := strconv.Atoi(infoField(t, r.client, "stats", "evicted_keys"))
		if ev == 0 {
			t.Error("no key evicted")
		}
		if size, err := r.client.DBSize(ctx).Result(); err != nil || size >= n {
			t.Errorf("DBSIZE = %d (%v), want fewer than %d", size, err, n)
		}
		if err := r.client.Get(ctx, fmt.Sprintf("k%d", n-1)).Err(); err != nil {
			t.Errorf("the last key written is gone: %v", err)
		}
	})
}

func TestRealHAProxyConfigCheck(t *testing.T) {
	bin := needBinary(t, "haproxy")
	dir := t.TempDir()
	ipv6 := haproxyInput()
	ipv6.Entrypoint.Addr, ipv6.SourceAddr, ipv6.Servers[0].Addr, ipv6.Servers[1].Addr = "::1", "::1", "::1", "::1"
	ipv6.Local = ipv6.Entrypoint
	noVIP := haproxyInput()
	noVIP.MaxConn = 500
	noVIP.Entrypoint = noVIP.Local
	for name, in := range map[string]HAProxyInput{"vip": haproxyInput(), "ipv6": ipv6, "no-vip": noVIP} {
		t.Run(name, func(t *testing.T) {
			conf, err := HAProxy(in)
			if err != nil {
				t.Fatal(err)
			}
			file := writeFile(t, dir, name+".cfg", conf)
			out, err := exec.Command(bin, "-c", "-f", file).CombinedOutput()
			if err != nil {
				t.Fatalf("haproxy -c: %v\n%s", err, out)
			}
			// The only warnings allowed are the intended missing client and
			// server timeouts (see HAProxy's doc comment).
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "[WARNING]") && !strings.Contains(l, "missing timeouts for") {
					t.Errorf("unexpected warning: %s", l)
				}
				if strings.Contains(l, "[ALERT]") {
					t.Errorf("alert: %s", l)
				}
			}
		})
	}
}

// rawRedis is a plain TCP conversation, for what a client library hides.
type rawRedis struct {
	c net.Conn
	r *bufio.Reader
}

func dialRaw(addr string) (*rawRedis, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	return &rawRedis{c: c, r: bufio.NewReader(c)}, nil
}

// pingAuth sends AUTH and PING and checks the two answers.
func (r *rawRedis) pingAuth(password string) error {
	_ = r.c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(r.c, "AUTH %s\r\nPING\r\n", password); err != nil {
		return err
	}
	for _, want := range []string{"+OK", "+PONG"} {
		l, err := r.r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSpace(l) != want {
			return fmt.Errorf("got %q, want %s", strings.TrimSpace(l), want)
		}
	}
	return nil
}

func (r *rawRedis) Close() error { return r.c.Close() }

func startHAProxy(t *testing.T, in HAProxyInput) *proc {
	t.Helper()
	bin := needBinary(t, "haproxy")
	dir := t.TempDir()
	if in.StatsSocket == "" {
		in.StatsSocket = filepath.Join(dir, "haproxy.sock")
	}
	conf, err := HAProxy(in)
	if err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, dir, "haproxy.cfg", conf)
	return startProc(t, bin, "-db", "-f", file)
}

// TestRealHAProxyMaxConn proves the connection limit refuses the next client
// at once (accepted and closed, no waiting in a backlog) and frees the slot
// when a client leaves.
func TestRealHAProxyMaxConn(t *testing.T) {
	redisBin := needBinary(t, "redis-server")
	needBinary(t, "haproxy")
	r := startRedis(t, redisBin, RedisInput{BindAddr: "127.0.0.1", PlanMemoryMB: 16, Settings: api.DefaultSettings()})
	const limit = 3
	entry := Endpoint{"127.0.0.1", freePort(t, "127.0.0.1")}
	socket := filepath.Join(t.TempDir(), "haproxy.sock")
	hp := startHAProxy(t, HAProxyInput{
		AddonID: "maxconn-test", Entrypoint: entry, SourceAddr: "127.0.0.1",
		Servers:  []HAProxyServer{{Name: "r1", Addr: r.in.BindAddr, Port: r.in.Port}},
		Password: api.NewSecret(testFleet), MaxConn: limit, StatsSocket: socket,
	})
	// The first connection is the one that finds HAProxy routing; it stays
	// open (a closed probe would hold its slot until HAProxy sees the close).
	var open []*rawRedis
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	connect := func() error {
		c, err := dialRaw(entry.String())
		if err != nil {
			return err
		}
		if err := c.pingAuth(testPassword); err != nil {
			c.Close()
			return err
		}
		open = append(open, c)
		return nil
	}
	waitFor(t, 10*time.Second, "haproxy routes to redis", connect, hp, r.proc)
	for len(open) < limit {
		if err := connect(); err != nil {
			t.Fatalf("connection %d: %v", len(open)+1, err)
		}
	}

	// The stats socket answers the agent.
	if stat := showStat(t, socket); !strings.Contains(stat, "fe_maxconn-test,FRONTEND,,,3,") {
		t.Errorf("stats socket: want 3 current sessions on the frontend:\n%s", stat)
	}

	// The next one is closed by HAProxy right away: no answer, EOF or reset
	// (on loopback the reset can even beat connect's return).
	start := time.Now()
	extra, err := dialRaw(entry.String())
	if err == nil {
		err = extra.pingAuth(testPassword)
		extra.Close()
		if err == nil {
			t.Fatal("a connection past the limit was served")
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a connection past the limit hung instead of being refused: %v", err)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("refusal: %v, want EOF or reset", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v", d)
	}

	// A client leaving frees its slot.
	open[0].Close()
	open = open[1:]
	waitFor(t, 5*time.Second, "a slot frees when a client leaves", connect, hp)
}

// TestRealFailoverTopology runs an addon the way a business plan does, each
// "host" on its own loopback address: primary on 127.0.0.1, replica on
// 127.0.0.2, three sentinels on .1/.2/.3, HAProxy on .3. It checks the
// addresses everyone announces and connects from, that the sentinels agree,
// and that after SENTINEL FAILOVER HAProxy routes to the new primary and the
// old one follows it (masterauth).
func TestRealFailoverTopology(t *testing.T) {
	redisBin := needBinary(t, "redis-server")
	sentinelBin := needBinary(t, "redis-sentinel")
	needBinary(t, "haproxy")
	ctx := context.Background()
	const name = "topology-test"

	primary := startRedis(t, redisBin, RedisInput{BindAddr: "127.0.0.1", PlanMemoryMB: 16, Settings: api.DefaultSettings()})
	primaryEP := Endpoint{primary.in.BindAddr, primary.in.Port}
	replica := startRedis(t, redisBin, RedisInput{BindAddr: "127.0.0.2", PlanMemoryMB: 16,
		Settings: api.DefaultSettings(), ReplicaOf: primaryEP})
	replicaEP := Endpoint{replica.in.BindAddr, replica.in.Port}
	waitFor(t, 10*time.Second, "replica in sync", func() error {
		if s := infoField(t, replica.client, "replication", "master_link_status"); s != "up" {
			return fmt.Errorf("master_link_status=%s", s)
		}
		return nil
	}, replica.proc, primary.proc)

	// replica-announce-ip and bind-source-addr seen from the primary.
	if s := infoField(t, primary.client, "replication", "slave0"); !strings.HasPrefix(s, "ip=127.0.0.2,port="+strconv.Itoa(replicaEP.Port)+",") {
		t.Errorf("primary sees its replica as %q, want ip=127.0.0.2", s)
	}
	clients, err := primary.client.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(clients, "addr=127.0.0.2:") {
		t.Errorf("no connection from 127.0.0.2 on the primary (bind-source-addr):\n%s", clients)
	}

	// Three sentinels.
	sentinelIPs := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	otherIPs := func(i int) string {
		var o []string
		for j, ip := range sentinelIPs {
			if j != i {
				o = append(o, ip)
			}
		}
		return strings.Join(o, ",")
	}
	var sentinels []*redis.Client
	var sentinelProcs []*proc
	for _, addr := range sentinelIPs {
		dir := t.TempDir()
		in := SentinelInput{BindAddr: addr, Port: freePort(t, addr), DataDir: dir,
			MasterName: name, Primary: primaryEP, Password: api.NewSecret(testFleet)}
		conf, err := Sentinel(in)
		if err != nil {
			t.Fatal(err)
		}
		p := startProc(t, sentinelBin, writeFile(t, dir, "sentinel.conf", conf))
		sentinelProcs = append(sentinelProcs, p)
		anon := newClient(t, Endpoint{addr, in.Port}.String(), "")
		c := newClient(t, Endpoint{addr, in.Port}.String(), testFleet)
		waitFor(t, 10*time.Second, "sentinel on "+addr+" answers", func() error {
			return c.Ping(ctx).Err()
		}, p)
		// Nobody else: SENTINEL commands need the fleet credential.
		if err := anon.Do(ctx, "SENTINEL", "MASTERS").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
			t.Errorf("SENTINEL MASTERS without the password: %v, want NOAUTH", err)
		}
		if err := newClient(t, Endpoint{addr, in.Port}.String(), testPassword).Ping(ctx).Err(); err == nil {
			t.Error("a sentinel accepts the app's password")
		}
		sentinels = append(sentinels, c)
	}
	all := append([]*proc{primary.proc, replica.proc}, sentinelProcs...)
	for i, s := range sentinels {
		waitFor(t, 20*time.Second, fmt.Sprintf("sentinel %d knows the replica and the 2 other sentinels", i+1), func() error {
			if err := s.Do(ctx, "SENTINEL", "CKQUORUM", name).Err(); err != nil {
				return err
			}
			others, err := s.Do(ctx, "SENTINEL", "SENTINELS", name).Slice()
			if err != nil {
				return err
			}
			if len(others) != 2 {
				return fmt.Errorf("%d other sentinels", len(others))
			}
			var ips []string
			for _, o := range others {
				ips = append(ips, asMap(o)["ip"])
			}
			sort.Strings(ips)
			if got, want := strings.Join(ips, ","), otherIPs(i); got != want {
				return fmt.Errorf("other sentinels recorded at %s, want %s", got, want)
			}
			replicas, err := s.Do(ctx, "SENTINEL", "REPLICAS", name).Slice()
			if err != nil {
				return err
			}
			if len(replicas) != 1 {
				return fmt.Errorf("%d replicas", len(replicas))
			}
			rm := asMap(replicas[0])
			if got := rm["ip"] + ":" + rm["port"]; got != fmt.Sprintf("127.0.0.2:%d", replicaEP.Port) {
				return fmt.Errorf("replica recorded at %s", got)
			}
			return nil
		}, all...)
	}
	if got := infoField(t, sentinels[0], "sentinel", "master0"); !strings.Contains(got, "status=ok") {
		t.Errorf("sentinel master0: %s", got)
	}

	// HAProxy on .3 routes to the primary, connecting from .3.
	entry := Endpoint{"127.0.0.3", freePort(t, "127.0.0.3")}
	hp := startHAProxy(t, HAProxyInput{
		AddonID: name, Entrypoint: entry, SourceAddr: "127.0.0.3",
		Servers: []HAProxyServer{
			{Name: "r1", Addr: primaryEP.Addr, Port: primaryEP.Port},
			{Name: "r2", Addr: replicaEP.Addr, Port: replicaEP.Port},
		},
		Password: api.NewSecret(testFleet),
	})
	all = append(all, hp)
	viaProxy := newClient(t, entry.String(), testPassword)
	routedTo := func(want Endpoint) func() error {
		return func() error {
			info, err := viaProxy.Do(ctx, "CLIENT", "INFO").Text()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "laddr="+want.String()+" ") {
				return fmt.Errorf("routed to the wrong member: %s", strings.TrimSpace(info))
			}
			if !strings.Contains(info, "addr=127.0.0.3:") {
				return fmt.Errorf("haproxy does not connect from its source address: %s", strings.TrimSpace(info))
			}
			return viaProxy.Set(ctx, "written-through-entrypoint", want.String(), 0).Err()
		}
	}
	waitFor(t, 10*time.Second, "haproxy routes to the primary", routedTo(primaryEP), all...)

	// The primary's process dies; the agent, told so by the runtime, forces
	// the failover at once. The replica becomes primary and HAProxy follows.
	// (A SENTINEL FAILOVER with the old primary still alive would leave it
	// writable, and first in HAProxy's list, until Sentinel demotes it
	// 8-10 s later: a planned switchover must demote it itself.)
	primary.proc.kill(t)
	alive := append([]*proc{replica.proc, hp}, sentinelProcs...)
	if err := sentinels[0].Do(ctx, "SENTINEL", "FAILOVER", name).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	waitFor(t, 10*time.Second, "haproxy routes to the new primary", routedTo(replicaEP), alive...)
	for i, s := range sentinels {
		waitFor(t, 10*time.Second, fmt.Sprintf("sentinel %d sees the new primary", i+1), func() error {
			addr, err := s.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name).StringSlice()
			if err != nil {
				return err
			}
			if got := strings.Join(addr, ":"); got != replicaEP.String() {
				return fmt.Errorf("primary %s", got)
			}
			return nil
		}, alive...)
	}

	// The old primary restarts as what the agent renders for it: a replica
	// of the current primary (empty data dir here). It authenticates with
	// masterauth, announces its address and copies the new primary's data.
	restarted := startRedis(t, redisBin, RedisInput{BindAddr: primaryEP.Addr, Port: primaryEP.Port, PlanMemoryMB: 16,
		Settings: api.DefaultSettings(), ReplicaOf: replicaEP})
	alive = append(alive, restarted.proc)
	waitFor(t, 10*time.Second, "restarted member follows the new primary", func() error {
		m := parseInfo(restarted.client.Info(ctx, "replication").Val())
		if m["role"] != "slave" || m["master_link_status"] != "up" {
			return fmt.Errorf("role=%s link=%s", m["role"], m["master_link_status"])
		}
		return nil
	}, alive...)
	if got := restarted.client.Get(ctx, "written-through-entrypoint").Val(); got != replicaEP.String() {
		t.Errorf("the restarted replica has %q for the key written through the entrypoint, want %q", got, replicaEP.String())
	}
	if s := infoField(t, replica.client, "replication", "slave0"); !strings.HasPrefix(s, "ip=127.0.0.1,port="+strconv.Itoa(primaryEP.Port)+",") {
		t.Errorf("new primary sees its replica as %q", s)
	}
	// HAProxy keeps routing to the new primary: the restarted node is a
	// replica and fails the role check.
	if err := routedTo(replicaEP)(); err != nil {
		t.Error(err)
	}
}

// asMap turns a SENTINEL reply entry (a RESP3 map or a RESP2 flat array of
// field/value pairs) into a map.
func asMap(v any) map[string]string {
	m := map[string]string{}
	switch x := v.(type) {
	case map[any]any:
		for k, val := range x {
			m[fmt.Sprint(k)] = fmt.Sprint(val)
		}
	case []any:
		for i := 0; i+1 < len(x); i += 2 {
			m[fmt.Sprint(x[i])] = fmt.Sprint(x[i+1])
		}
	}
	return m
}

// showStat asks HAProxy's stats socket for "show stat".
func showStat(t *testing.T, socket string) string {
	t.Helper()
	sc, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	_ = sc.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.WriteString(sc, "show stat\n")
	stat, _ := io.ReadAll(sc)
	return string(stat)
}
