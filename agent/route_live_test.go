package agent

// The router against the real binaries, without containerd: a primary on
// 127.0.0.171, its replica on .172, three sentinels on .171-.173 and the
// entrypoint HAProxy of .173 rendered as the agent renders it (the VIP
// 127.0.6.1 bound with transparent, a frontend on its own address), each a
// plain process in its own process group, killed when the test ends. A
// missing binary fails the test (make deps installs them). Every wait
// polls with a deadline.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
	"github.com/redis/go-redis/v9"
)

const (
	rlHostP = "127.0.0.171" // the primary's host
	rlHostR = "127.0.0.172" // the replica's host
	rlHostH = "127.0.0.173" // the haproxy's host
	rlVIP   = "127.0.6.1"
	rlPass  = "pw_route-live-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHI" // the fleet's
	rlApp   = "app_route-live-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"  // the app's
	rlName  = "route-live"
)

type rlProc struct {
	name string
	cmd  *exec.Cmd
	out  *strings.Builder
	mu   sync.Mutex
	done chan struct{}
}

func (p *rlProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *rlProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.ReplaceAll(strings.ReplaceAll(p.out.String(), rlPass, "<password>"), rlApp, "<password>")
}

func rlStart(t *testing.T, name, bin string, args ...string) *rlProc {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s is not installed (make deps installs it): %v", bin, err)
	}
	p := &rlProc{name: name, out: &strings.Builder{}, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.output())
		}
	})
	return p
}

func (p *rlProc) kill(t *testing.T) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

func rlWrite(t *testing.T, dir, name, content string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func rlRedis(t *testing.T, ip string, replicaOf render.Endpoint) string {
	t.Helper()
	dir := t.TempDir()
	in := render.RedisInput{Engine: api.EngineRedis, BindAddr: ip, Port: testutil.FreePort(t, ip), AnnounceIP: ip, DataDir: dir,
		Password: api.NewSecret(rlApp), FleetPassword: api.NewSecret(rlPass), PlanMemoryMB: 16, Settings: api.DefaultSettings(), ReplicaOf: replicaOf}
	conf, err := render.Redis(in)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(in.Port))
	p := rlStart(t, "redis "+addr, "redis-server", rlWrite(t, dir, "redis.conf", conf))
	testutil.WaitFor(t, 10*time.Second, func() error {
		select {
		case <-p.done:
			t.Fatalf("redis %s exited:\n%s", addr, p.output())
		default:
		}
		return redisctl.Ping(context.Background(), addr, rlPass)
	})
	return addr
}

func rlSentinel(t *testing.T, ip string, primary render.Endpoint) (string, *rlProc) {
	t.Helper()
	dir := t.TempDir()
	in := render.SentinelInput{BindAddr: ip, Port: testutil.FreePort(t, ip), AnnounceIP: ip, DataDir: dir,
		MasterName: rlName, Primary: primary, Password: api.NewSecret(rlPass)}
	conf, err := render.Sentinel(in)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(in.Port))
	p := rlStart(t, "sentinel "+addr, "redis-sentinel", rlWrite(t, dir, "sentinel.conf", conf))
	return addr, p
}

func endpointOf(t *testing.T, addr string) render.Endpoint {
	t.Helper()
	e, err := endpoint("address", addr)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// rlConn is a raw client connection (what a client library hides).
type rlConn struct {
	c net.Conn
	r *bufio.Reader
}

// rlDial connects as the app (the default user).
func rlDial(addr string) (*rlConn, error) { return rlDialAs(addr, "AUTH", rlApp) }

// rlDialFleet connects as the fleet's user (DEBUG is refused to the app).
func rlDialFleet(addr string) (*rlConn, error) {
	return rlDialAs(addr, "AUTH", redisctl.FleetUser, rlPass)
}

func rlDialAs(addr string, auth ...string) (*rlConn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	rc := &rlConn{c: c, r: bufio.NewReader(c)}
	if err := rc.cmd(2*time.Second, "+OK", auth...); err != nil {
		c.Close()
		return nil, err
	}
	return rc, nil
}

// send writes one command.
func (c *rlConn) send(args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := c.c.Write([]byte(b.String()))
	return err
}

// reply reads one reply (a simple line or a bulk string).
func (c *rlConn) reply(timeout time.Duration) (string, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	l = strings.TrimRight(l, "\r\n")
	if strings.HasPrefix(l, "$") {
		n, _ := strconv.Atoi(l[1:])
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return l, nil
}

func (c *rlConn) cmd(timeout time.Duration, want string, args ...string) error {
	if err := c.send(args...); err != nil {
		return err
	}
	got, err := c.reply(timeout)
	if err != nil {
		return err
	}
	if want != "" && got != want {
		return fmt.Errorf("%s: got %q, want %q", args[0], got, want)
	}
	return nil
}

// laddr is the redis member this connection reached (CLIENT INFO's laddr).
func (c *rlConn) laddr() (string, error) {
	if err := c.send("CLIENT", "INFO"); err != nil {
		return "", err
	}
	info, err := c.reply(2 * time.Second)
	if err != nil {
		return "", err
	}
	for _, f := range strings.Fields(info) {
		if v, ok := strings.CutPrefix(f, "laddr="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no laddr in %q", info)
}

func (c *rlConn) Close() { c.c.Close() }

// reaches dials addr and reports the member it reaches.
func reaches(addr string) (string, error) {
	c, err := rlDial(addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.laddr()
}

// TestRouterLive: the router keeps the replica in MAINT; a +switch-master
// while the primary sleeps (DEBUG SLEEP 3) cuts the old primary's sessions
// and routes new connections to the new one within ~200 ms of the
// announcement, and nothing reaches the old primary when it wakes; the
// clients' frontend is disabled on a non-holder (after the release grace
// when it just lost the VIP) and enabled on the holder, keeping the
// established sessions; a restarted HAProxy and a restarted router
// converge; without a majority nothing changes.
func TestRouterLive(t *testing.T) {
	for _, b := range []string{"redis-server", "redis-sentinel", "haproxy"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s is not installed (make deps installs it): %v", b, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	primary := rlRedis(t, rlHostP, render.Endpoint{})
	replica := rlRedis(t, rlHostR, endpointOf(t, primary))
	var sentinels []string
	var sprocs []*rlProc
	for _, ip := range []string{rlHostP, rlHostR, rlHostH} {
		s, p := rlSentinel(t, ip, endpointOf(t, primary))
		sentinels, sprocs = append(sentinels, s), append(sprocs, p)
	}
	for _, s := range sentinels {
		testutil.WaitFor(t, 30*time.Second, func() error {
			k, err := redisctl.Known(ctx, s, rlPass, rlName)
			if err != nil {
				return err
			}
			if !redisctl.Has(k.Replicas, replica) || len(k.Sentinels) != 2 {
				return fmt.Errorf("sentinel %s knows replicas %v, sentinels %v", s, k.Replicas, k.Sentinels)
			}
			return nil
		})
	}

	// The entrypoint haproxy, as the agent renders it.
	dataDir := t.TempDir()
	a := &Agent{cfg: Config{Address: rlHostH, DataDir: dataDir}}
	port := testutil.FreePort(t, rlHostH)
	as := api.Assignment{MemberID: "hp-1", AddonID: rlName, Role: api.RoleHAProxy, Address: rlHostH, Port: port,
		Password: api.NewSecret(rlApp), FleetPassword: api.NewSecret(rlPass), Entrypoint: net.JoinHostPort(rlVIP, strconv.Itoa(port)), VIP: rlVIP, MaxConn: 100,
		Servers: []string{primary, replica}, Sentinels: sentinels, MasterName: rlName}
	p, err := a.planMember(as)
	if err != nil {
		t.Fatal(err)
	}
	rlAccess(t, p)
	in, _ := a.haproxyInput(as)
	startHAP := func() *rlProc {
		return rlStart(t, "haproxy", "haproxy", "-db", "-f", rlWrite(t, p.dir, haproxyConfName, p.conf))
	}
	hap := startHAP()
	spec := routeSpecOf(as, in)
	hapi := hapAPI{socket: spec.socket}
	vip, own := in.Entrypoint.String(), in.Local.String()
	rs := newRoutes()
	defer rs.stop()
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})

	// want polls until HAProxy's servers have the given admin states.
	want := func(timeout time.Duration, admin map[string]string) time.Duration {
		t.Helper()
		start := time.Now()
		testutil.WaitFor(t, timeout, func() error {
			st, err := hapi.state(ctx)
			if err != nil {
				return err
			}
			for _, s := range st.Servers[spec.backend] {
				if w, ok := admin[s.Name]; ok && s.Admin != w {
					return fmt.Errorf("%s is %s, want %s (%+v)", s.Name, s.Admin, w, st.Servers[spec.backend])
				}
			}
			return nil
		})
		return time.Since(start)
	}
	nameOf := func(addr string) string {
		t.Helper()
		var name string
		testutil.WaitFor(t, 5*time.Second, func() error {
			st, err := hapi.state(ctx)
			if err != nil {
				return err
			}
			for _, s := range st.Servers[spec.backend] {
				if s.Addr == addr {
					name = s.Name
					return nil
				}
			}
			return fmt.Errorf("no server at %s: %+v", addr, st.Servers[spec.backend])
		})
		return name
	}
	pName, rName := nameOf(primary), nameOf(replica)
	want(10*time.Second, map[string]string{pName: hapReady, rName: hapMaint})
	testutil.WaitFor(t, 5*time.Second, func() error {
		got, err := reaches(vip)
		if err == nil && got != primary {
			err = fmt.Errorf("the VIP reaches %s", got)
		}
		return err
	})
	if got, err := reaches(own); err != nil || got != primary {
		t.Fatalf("own address frontend: %s, %v", got, err)
	}

	// A session on the primary through the VIP.
	c1, err := rlDial(vip)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if got, _ := c1.laddr(); got != primary {
		t.Fatalf("c1 reaches %s", got)
	}
	type outcome struct {
		reply string
		err   error
		at    time.Time
	}
	// heard reports when sentinel s announces (+switch-master) that the
	// primary moved to to.
	heard := func(s, to string) <-chan time.Time {
		ch := make(chan time.Time, 1)
		w, err := redisctl.WatchSwitchMaster(ctx, s, rlPass)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer w.Close()
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			for {
				ev, err := w.Next(wctx)
				if err != nil {
					return
				}
				if !ev.Promoting && ev.To == to {
					ch <- time.Now()
					return
				}
			}
		}()
		return ch
	}
	// routedTo polls until a new connection through the VIP reaches to.
	routedTo := func(to string) time.Time {
		t.Helper()
		var at time.Time
		testutil.WaitFor(t, 3*time.Second, func() error {
			got, err := reaches(vip)
			if err == nil && got != to {
				err = fmt.Errorf("the VIP reaches %s", got)
			}
			at = time.Now()
			return err
		})
		return at
	}

	// 1. The primary is busy (DEBUG SLEEP 3) when a failover is forced;
	// c1 writes meanwhile (it waits on the sleeper). The router follows
	// every sentinel: the leader's promotion announcement cuts c1 and
	// routes to the new primary before the +switch-master.
	switched := heard(sentinels[2], replica)
	sleeper, err := rlDialFleet(primary)
	if err != nil {
		t.Fatal(err)
	}
	defer sleeper.Close()
	if err := sleeper.send("DEBUG", "SLEEP", "3"); err != nil {
		t.Fatal(err)
	}
	slept := time.Now()
	testutil.WaitFor(t, 2*time.Second, func() error {
		if err := redisctl.Ping(ctx, primary, rlPass); err == nil {
			return errors.New("primary still answers")
		}
		return nil
	})
	if err := c1.send("SET", "written-to-the-sleeper", "1"); err != nil {
		t.Fatal(err)
	}
	c1done := make(chan outcome, 1)
	go func() {
		r, err := c1.reply(10 * time.Second)
		c1done <- outcome{r, err, time.Now()}
	}()
	if _, err := redisctl.Failover(ctx, sentinels, rlPass, rlName); err != nil {
		t.Fatal(err)
	}
	failedOver := time.Now()
	routedAt := routedTo(replica)
	var cut outcome
	select {
	case cut = <-c1done:
	case <-time.After(5 * time.Second):
		t.Fatal("the old primary's session was not cut")
	}
	if cut.err == nil {
		t.Errorf("the write sent to the sleeping old primary was answered %q: it took a write after the switch", cut.reply)
	}
	var at time.Time
	select {
	case at = <-switched:
	case <-time.After(10 * time.Second):
		t.Fatal("no +switch-master within 10 s")
	}
	t.Logf("failover of a sleeping primary: its session cut %s and new connections on the new primary %s after SENTINEL FAILOVER; +switch-master %s after it",
		cut.at.Sub(failedOver).Round(time.Millisecond), routedAt.Sub(failedOver).Round(time.Millisecond), at.Sub(failedOver).Round(time.Millisecond))
	// Within 450 ms: well before the routers' next read of HAProxy's
	// state would have seen it (their 500 ms tick, up to 5 s while quiet);
	// typically 100–250 ms, 330 ms seen on a loaded CI machine.
	if cut.at.Sub(at) > 450*time.Millisecond || routedAt.Sub(at) > 450*time.Millisecond {
		t.Errorf("cut %v and routed %v after the +switch-master, want within ~450 ms", cut.at.Sub(at), routedAt.Sub(at))
	}
	want(time.Second, map[string]string{pName: hapMaint, rName: hapReady})
	// When the old primary wakes (a stray master until someone demotes
	// it) nothing reaches it.
	testutil.WaitFor(t, 10*time.Second, func() error {
		return redisctl.Ping(ctx, primary, rlPass)
	})
	t.Logf("old primary answers again %s after its sleep began", time.Since(slept).Round(time.Millisecond))
	for i := 0; i < 20; i++ {
		if got, err := reaches(vip); err != nil || got != replica {
			t.Fatalf("after the old primary woke, the VIP reaches %s (%v)", got, err)
		}
	}
	if st, err := hapi.state(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, s := range st.Servers[spec.backend] {
			if s.Name == pName && (s.Sessions != 0 || s.Admin != hapMaint) {
				t.Errorf("old primary in HAProxy: %+v", s)
			}
		}
	}

	// 2. Back the other way, the router hearing only +switch-master: it
	// follows the two sentinels that do not lead the failover.
	if err := redisctl.Demote(ctx, primary, rlPass, replica); err != nil { // the coordinator's stray demotion
		t.Fatal(err)
	}
	for _, s := range sentinels {
		testutil.WaitFor(t, 30*time.Second, func() error {
			k, err := redisctl.Known(ctx, s, rlPass, rlName)
			if err != nil {
				return err
			}
			if !redisctl.Has(k.Replicas, primary) {
				return fmt.Errorf("sentinel %s knows replicas %v", s, k.Replicas)
			}
			r, err := redisctl.GetReplication(ctx, primary, rlPass)
			if err == nil && r.LinkStatus != "up" {
				err = fmt.Errorf("old primary's link %s", r.LinkStatus)
			}
			return err
		})
	}
	followers := spec
	followers.sentinels = sentinels[1:]
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: followers})
	c2, err := rlDial(vip)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, _ := c2.laddr(); got != replica {
		t.Fatalf("c2 reaches %s", got)
	}
	c2done := make(chan outcome, 1)
	go func() {
		r, err := c2.reply(20 * time.Second) // no command sent: returns when the session is cut
		c2done <- outcome{r, err, time.Now()}
	}()
	switched = heard(sentinels[2], primary)
	if by, err := redisctl.Failover(ctx, sentinels[:1], rlPass, rlName); err != nil || by != sentinels[0] {
		t.Fatalf("failover back: %s, %v", by, err)
	}
	failedOver = time.Now()
	select {
	case at = <-switched:
	case <-time.After(10 * time.Second):
		t.Fatal("no +switch-master within 10 s")
	}
	routedAt = routedTo(primary)
	select {
	case cut = <-c2done:
	case <-time.After(5 * time.Second):
		t.Fatal("the old primary's session was not cut")
	}
	t.Logf("failover heard through +switch-master only (%s after SENTINEL FAILOVER): old primary's session cut %s and new connections on the new primary %s after the announcement",
		at.Sub(failedOver).Round(time.Millisecond), cut.at.Sub(at).Round(time.Millisecond), routedAt.Sub(at).Round(time.Millisecond))
	// Within 450 ms: well before the routers' next read of HAProxy's
	// state would have seen it (their 500 ms tick, up to 5 s while quiet);
	// typically 100–250 ms, 330 ms seen on a loaded CI machine.
	if cut.at.Sub(at) > 450*time.Millisecond || routedAt.Sub(at) > 450*time.Millisecond {
		t.Errorf("cut %v and routed %v after the +switch-master, want within ~450 ms", cut.at.Sub(at), routedAt.Sub(at))
	}
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})
	// From here on the primary is the first member again.
	want(time.Second, map[string]string{pName: hapReady, rName: hapMaint})
	cur := primary

	// The VIP moves away: the frontend closes after the grace, sessions
	// stay; it comes back: the frontend opens again at once.
	c3, err := rlDial(vip)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	moved := spec
	moved.holder = false
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: moved})
	lost := time.Now()
	testutil.WaitFor(t, vipReleaseGrace+2*time.Second, func() error {
		c, err := net.DialTimeout("tcp", vip, time.Second)
		if err == nil {
			c.Close()
			return errors.New("the VIP still accepts")
		}
		return nil
	})
	released := time.Since(lost)
	if released < vipReleaseGrace {
		t.Errorf("the frontend closed %v after the VIP moved, before the %v grace", released, vipReleaseGrace)
	}
	if err := c3.cmd(2*time.Second, "+PONG", "PING"); err != nil {
		t.Errorf("a session through the disabled frontend: %v", err)
	}
	if got, err := reaches(own); err != nil || got != cur {
		t.Errorf("own-address frontend with the VIP frontend disabled: %s, %v", got, err)
	}
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})
	back := time.Now()
	testutil.WaitFor(t, 2*time.Second, func() error { _, err := reaches(vip); return err })
	t.Logf("frontend disabled %s after the VIP left (grace %s), enabled again %s after it came back",
		released.Round(time.Millisecond), vipReleaseGrace, time.Since(back).Round(time.Millisecond))
	if err := c3.cmd(2*time.Second, "+PONG", "PING"); err != nil {
		t.Errorf("a session across disable and enable: %v", err)
	}

	// A second member of the pair starts as a non-holder: its clients'
	// frontend is disabled at once (both bind the VIP on loopback).
	b := &Agent{cfg: Config{Address: rlHostR, DataDir: t.TempDir()}}
	as2 := as
	as2.MemberID, as2.Address, as2.VIP = "hp-2", rlHostR, ""
	p2, err := b.planMember(as2)
	if err != nil {
		t.Fatal(err)
	}
	rlAccess(t, p2)
	in2, _ := b.haproxyInput(as2)
	rlStart(t, "haproxy 2", "haproxy", "-db", "-f", rlWrite(t, p2.dir, haproxyConfName, p2.conf))
	rs2 := newRoutes()
	defer rs2.stop()
	spec2 := routeSpecOf(as2, in2)
	rs2.sync(ctx, testutil.Logger(t), map[string]routeSpec{as2.MemberID: spec2})
	testutil.WaitFor(t, 5*time.Second, func() error {
		st, err := hapAPI{socket: spec2.socket}.state(ctx)
		if err != nil {
			return err
		}
		if st.Frontends[spec2.frontend] {
			return errors.New("the non-holder's clients' frontend is enabled")
		}
		for _, s := range st.Servers[spec2.backend] {
			if (s.Name == rName) != (s.Admin == hapMaint) {
				return fmt.Errorf("non-holder's servers %+v", st.Servers[spec2.backend])
			}
		}
		return nil
	})

	// HAProxy restarts (every server ready): the router puts it right
	// within a tick.
	hap.kill(t)
	restarted := time.Now()
	startHAP() // killed at the end of the test
	want(5*time.Second, map[string]string{pName: hapReady, rName: hapMaint})
	t.Logf("restarted HAProxy routed again %s after its restart", time.Since(restarted).Round(time.Millisecond))
	if d := time.Since(restarted); d > routeTick+time.Second {
		t.Errorf("a restarted HAProxy was put right after %v", d)
	}

	// The router restarts (an agent restart): nothing changes, sessions
	// stay.
	c4, err := rlDial(vip)
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	rs.stop()
	rs = newRoutes()
	defer rs.stop()
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})
	if err := c4.cmd(2*time.Second, "+PONG", "PING"); err != nil {
		t.Errorf("a session across a router restart: %v", err)
	}

	// No majority (two sentinels frozen): nothing changes, even when
	// HAProxy's states are moved by hand.
	for _, sp := range sprocs[:2] {
		if err := syscall.Kill(sp.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(sp.cmd.Process.Pid, syscall.SIGCONT)
	}
	rs.stop()
	rs = newRoutes()
	defer rs.stop()
	if err := hapi.exec(ctx, []string{"set server " + spec.backend + "/" + pName + " state maint", "set server " + spec.backend + "/" + rName + " state ready"}); err != nil {
		t.Fatal(err)
	}
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})
	deadline := time.Now().Add(majorityEvery + routeTick + time.Second)
	for time.Now().Before(deadline) {
		st, err := hapi.state(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Servers[spec.backend] {
			if s.Name == pName && s.Admin != hapMaint {
				t.Fatalf("without a majority the router changed %s: %+v", pName, s)
			}
		}
		time.Sleep(50 * time.Millisecond) // sampling period of the check, not synchronisation
	}
}

// TestRouterServersLive: the redis members of an entrypoint change (a
// starter becomes a business addon and back) and the router adds and
// deletes HAProxy's servers at run time: the HAProxy process is the same,
// a client's connection through the entrypoint stays open and answers, an
// added replica never takes traffic (its role check fails), and a removed
// server is gone from the backend.
func TestRouterServersLive(t *testing.T) {
	for _, b := range []string{"redis-server", "haproxy"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s is not installed (make deps installs it): %v", b, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	primary := rlRedis(t, rlHostP, render.Endpoint{})
	replica := rlRedis(t, rlHostR, endpointOf(t, primary))

	a := &Agent{cfg: Config{Address: rlHostH, DataDir: t.TempDir()}}
	port := testutil.FreePort(t, rlHostH)
	as := api.Assignment{MemberID: "hp-1", AddonID: rlName, Role: api.RoleHAProxy, Address: rlHostH, Port: port,
		Password: api.NewSecret(rlApp), FleetPassword: api.NewSecret(rlPass), Entrypoint: net.JoinHostPort(rlVIP, strconv.Itoa(port)), VIP: rlVIP, MaxConn: 100,
		Servers: []string{primary}, MasterName: rlName}
	p, err := a.planMember(as)
	if err != nil {
		t.Fatal(err)
	}
	rlAccess(t, p)
	in, _ := a.haproxyInput(as)
	hap := rlStart(t, "haproxy", "haproxy", "-db", "-f", rlWrite(t, p.dir, haproxyConfName, p.conf))
	spec := routeSpecOf(as, in)
	hapi := hapAPI{socket: spec.socket}
	rs := newRoutes()
	defer rs.stop()
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})

	// servers polls until the backend holds exactly addrs (address → admin state).
	servers := func(want map[string]string) {
		t.Helper()
		testutil.WaitFor(t, 10*time.Second, func() error {
			st, err := hapi.state(ctx)
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, s := range st.Servers[spec.backend] {
				got[s.Addr] = s.Admin
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("backend holds %v, want %v", got, want)
			}
			return nil
		})
	}
	servers(map[string]string{primary: hapReady})

	c := redis.NewClient(&redis.Options{Addr: in.Entrypoint.String(), Password: rlApp, PoolSize: 1, MaxRetries: -1})
	defer c.Close()
	var id0 int64
	testutil.WaitFor(t, 10*time.Second, func() (err error) { id0, err = c.ClientID(ctx).Result(); return err })
	sameConn := func(when string) {
		t.Helper()
		if err := c.Set(ctx, "k", when, 0).Err(); err != nil {
			t.Fatalf("%s: a write through the entrypoint failed: %v", when, err)
		}
		id, err := c.ClientID(ctx).Result()
		if err != nil || id != id0 {
			t.Fatalf("%s: client id %d (%v), want %d: the connection through the entrypoint was cut", when, id, err, id0)
		}
	}

	// Starter → business: the replica joins the backend at run time.
	as2 := as
	as2.Servers = []string{primary, replica}
	in2, _ := a.haproxyInput(as2)
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: routeSpecOf(as2, in2)})
	servers(map[string]string{primary: hapReady, replica: hapReady})
	testutil.WaitFor(t, 10*time.Second, func() error { // its role check has run: down
		st, err := hapi.state(ctx)
		if err != nil {
			return err
		}
		for _, s := range st.Servers[spec.backend] {
			if s.Addr == replica && s.Up {
				return fmt.Errorf("replica %s is up behind the entrypoint", replica)
			}
		}
		return nil
	})
	sameConn("after adding a server")
	p2, err := a.planMember(as2)
	if err != nil {
		t.Fatal(err)
	}
	rlAccess(t, p2)
	if p2.spec.SpecHash != p.spec.SpecHash {
		t.Fatalf("a server list change changes the haproxy member's spec hash (%s → %s): the agent would restart it", p.spec.SpecHash, p2.spec.SpecHash)
	}

	// Business → starter: the replica leaves the backend.
	rs.sync(ctx, testutil.Logger(t), map[string]routeSpec{as.MemberID: spec})
	servers(map[string]string{primary: hapReady})
	sameConn("after deleting a server")
	select {
	case <-hap.done:
		t.Fatalf("haproxy exited:\n%s", hap.output())
	default:
	}
}
