package e2e

// The kernel entrypoint mode end to end: the business fleet with
// --entrypoint-mode kernel, its faults run on one fleet (primary killed,
// drain, the 2,001st client, a live switch to haproxy and back, the
// entrypoint holder's host lost), each with 0 lost acknowledged writes.

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/kernelpath"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// kernelRules lists the user data of the rules in host's kernel table
// (none: no table).
func kernelRules(host string) ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	name := kernelpath.TableName(host)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, err
	}
	var table *nftables.Table
	for _, tb := range tables {
		if tb.Name == name {
			table = tb
		}
	}
	if table == nil {
		return nil, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		rs, err := c.GetRules(table, ch)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			out = append(out, string(r.UserData))
		}
	}
	return out, nil
}

// dropKernelTables removes the tables of hosts (a lost host's kernel goes
// with it; a stopped agent leaves its rules in place).
func dropKernelTables(t testing.TB, hosts ...string) {
	for _, h := range hosts {
		if err := kernelpath.New(kernelpath.TableName(h)).Drop(); err != nil {
			t.Errorf("drop the kernel table of %s: %v", h, err)
		}
	}
}

// clientAddr is the client address the server behind the entrypoint sees
// for one new connection, and that connection's own local address.
func (f *bizFleet) clientAddr() (seen, local string, err error) {
	c, err := net.DialTimeout("tcp", f.mustAddon().Entrypoint, 5*time.Second)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	return connClientAddr(c, f.opt.Password)
}

// connClientAddr logs in on c as the app and asks CLIENT INFO: the client
// address redis sees for c, and c's own local address.
func connClientAddr(c net.Conn, password string) (seen, local string, err error) {
	if err := authPing(c, password); err != nil {
		return "", "", err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("*2\r\n$6\r\nCLIENT\r\n$4\r\nINFO\r\n")); err != nil {
		return "", "", err
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return "", "", err
	}
	for _, field := range strings.Fields(string(buf[:n])) {
		if v, ok := strings.CutPrefix(field, "addr="); ok {
			return v, c.LocalAddr().String(), nil
		}
	}
	return "", "", fmt.Errorf("CLIENT INFO without addr: %q", buf[:n])
}

// waitKernelForward waits until the entrypoint holder's table forwards to
// the primary the FSM records and a new client reaches the primary with
// its own address (no proxy between).
func (f *bizFleet) waitKernelForward(timeout time.Duration) {
	f.t.Helper()
	testutil.WaitFor(f.t, timeout, func() error {
		a, err := f.addon()
		if err != nil {
			return err
		}
		var holder, primary api.Member
		for _, m := range a.Members {
			if m.Role == api.RoleHAProxy && m.Active {
				holder = m
			}
			if m.Role == api.RoleRedis && m.RedisRole == "primary" {
				primary = m
			}
		}
		if holder.ID == "" || primary.ID == "" {
			return fmt.Errorf("no holder or no primary yet")
		}
		rules, err := kernelRules(holder.HostID)
		if err != nil {
			return err
		}
		want := fmt.Sprintf("dnat-out %s>%s", a.Entrypoint, f.memberAddr(primary))
		found := false
		for _, r := range rules {
			found = found || strings.HasSuffix(r, want)
		}
		if !found {
			return fmt.Errorf("table of %s: %q, want a rule %q", holder.HostID, rules, want)
		}
		seen, local, err := f.clientAddr()
		if err != nil {
			return err
		}
		if seen != local {
			return fmt.Errorf("the primary sees the client as %s, not %s: not forwarded by the kernel", seen, local)
		}
		return nil
	})
}

// TestKernelBusiness runs the business faults in kernel mode on one fleet.
func TestKernelBusiness(t *testing.T) {
	raiseNoFile(t, 3*2000+1024)
	hosts := []string{"h1", "h2", "h3", "h4"}
	dropKernelTables(t, hosts...)
	t.Cleanup(func() { dropKernelTables(t, hosts...) }) // after the agents stop (cleanups run last in, first out)
	f := startBusiness(t, "kern-biz", bizOpts{CoordArgs: []string{"--entrypoint-mode", "kernel"}})
	if m := f.mustAddon().Settings.EntrypointMode(); m != api.EntrypointKernel {
		t.Fatalf("a new addon's entrypoint mode is %q, want kernel (the fleet default)", m)
	}
	start := time.Now()
	f.waitKernelForward(10 * time.Second)
	t.Logf("the holder's kernel forwards to the primary (%s after healthy)", time.Since(start).Round(time.Millisecond))

	t.Run("KillPrimaryProcess", func(t *testing.T) {
		killPrimaryProcess(t, f, "kkill:")
		f.waitKernelForward(10 * time.Second)
	})
	t.Run("MaxConn", func(t *testing.T) { checkMaxConn(t, f) })
	// Idle clients through the kernel forward: a BLPOP of 65 s and a
	// subscriber, across two live mode switches.
	idle := startIdleClients(t, f)
	t.Run("LiveSwitch", func(t *testing.T) {
		w := startWriter(f.opt, "kswitch:")
		w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
		settingsChange(t, f.c, f.app, "--entrypoint", "haproxy")
		testutil.WaitFor(t, 10*time.Second, func() error {
			seen, local, err := f.clientAddr()
			if err == nil && seen == local {
				err = fmt.Errorf("still forwarded by the kernel")
			}
			return err
		})
		w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
		settingsChange(t, f.c, f.app, "--entrypoint", "kernel")
		f.waitKernelForward(10 * time.Second)
		w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
		acks, failed, errs := w.finish()
		if failed > 0 {
			t.Errorf("%d failed commands across the switches: %v", failed, errs)
		}
		c := redis.NewClient(f.opt)
		defer c.Close()
		if lost := missing(t, c, "kswitch:", acks); len(lost) > 0 {
			t.Errorf("%d of %d acknowledged writes lost", len(lost), len(acks))
		}
		t.Logf("kernel -> haproxy -> kernel: %d writes acknowledged, %d failed", len(acks), failed)
	})
	t.Run("IdleClientsSurvive", func(t *testing.T) { idle.check(t, f) })
	t.Run("DrainPrimaryHost", func(t *testing.T) {
		drainPrimaryHost(t, f, "kdrain:")
		f.waitKernelForward(10 * time.Second)
	})
	t.Run("KillPrimaryHost", func(t *testing.T) {
		h := killPrimaryHost(t, f, "khost:", func(host string) { dropKernelTables(t, host) })
		f.waitKernelForward(10 * time.Second)
		f.agents[h].Restart() // back, empty, for the next fault
		f.agents[h].WaitReady(f.c)
	})
	t.Run("KillEntrypointHost", func(t *testing.T) {
		killEntrypointHost(t, f, "kvip:", func(host string) { dropKernelTables(t, host) })
		f.waitKernelForward(10 * time.Second)
	})
}

// idleClients are raw connections through the entrypoint: one blocked in
// a BLPOP of 65 s, one subscribed to a channel, both silent.
type idleClients struct {
	blpop, sub net.Conn
	at         time.Time
	done       chan error // the BLPOP's outcome
}

func startIdleClients(t *testing.T, f *bizFleet) *idleClients {
	t.Helper()
	ep := f.mustAddon().Entrypoint
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", ep, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", ep, err)
		}
		t.Cleanup(func() { c.Close() })
		if err := authPing(c, f.opt.Password); err != nil {
			t.Fatalf("auth: %v", err)
		}
		return c
	}
	ic := &idleClients{blpop: dial(), sub: dial(), done: make(chan error, 1)}
	if _, err := ic.sub.Write([]byte("*2\r\n$9\r\nSUBSCRIBE\r\n$8\r\nkidle:ch\r\n")); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	_ = ic.sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := readUntil(ic.sub, ":1\r\n"); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	_ = ic.sub.SetReadDeadline(time.Time{})
	ic.at = time.Now()
	if _, err := ic.blpop.Write([]byte("*3\r\n$5\r\nBLPOP\r\n$10\r\nkidle:list\r\n$2\r\n65\r\n")); err != nil {
		t.Fatalf("blpop: %v", err)
	}
	go func() {
		_ = ic.blpop.SetReadDeadline(time.Now().Add(80 * time.Second))
		ic.done <- readUntil(ic.blpop, "*-1\r\n")
	}()
	return ic
}

// readUntil reads c until what it read ends with want.
func readUntil(c net.Conn, want string) error {
	var got []byte
	buf := make([]byte, 256)
	for !strings.HasSuffix(string(got), want) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return fmt.Errorf("after %q: %w", got, err)
		}
	}
	return nil
}

// check waits for the BLPOP's own timeout (a nil reply after 65 s, not an
// error) and publishes to the subscriber, which must receive it.
func (ic *idleClients) check(t *testing.T, f *bizFleet) {
	if err := <-ic.done; err != nil {
		t.Fatalf("BLPOP 65 through the kernel entrypoint: %v after %s", err, time.Since(ic.at).Round(time.Millisecond))
	}
	if d := time.Since(ic.at); d < 65*time.Second {
		t.Fatalf("BLPOP 65 answered after %s", d)
	}
	c := redis.NewClient(f.opt)
	defer c.Close()
	testutil.WaitFor(t, 5*time.Second, func() error {
		n, err := c.Publish(context.Background(), "kidle:ch", "still here").Result()
		if err == nil && n != 1 {
			err = fmt.Errorf("published to %d subscribers, want 1", n)
		}
		return err
	})
	_ = ic.sub.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := readUntil(ic.sub, "still here\r\n"); err != nil {
		t.Fatalf("the idle subscriber: %v", err)
	}
	t.Logf("BLPOP 65 answered nil after %s; the subscriber, idle as long, got the message", time.Since(ic.at).Round(time.Millisecond))
}
