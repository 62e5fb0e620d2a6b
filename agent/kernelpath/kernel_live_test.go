package kernelpath

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
)

// serve answers each line with name: a stand-in primary.
func serve(t *testing.T, addr, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintln(c, name); err != nil {
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func ask(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(c, "who"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func dialAsk(t *testing.T, to netip.AddrPort) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", to.String(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	got, err := ask(c)
	if err != nil {
		t.Fatalf("ask through %s: %v", to, err)
	}
	return c, got
}

// TestKernelLive runs the rules in this machine's kernel (root only): a
// table of its own, forwarding a loopback VIP to one server then another.
func TestKernelLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (netlink nftables)")
	}
	a := serve(t, "127.0.3.11:0", "a")
	b := serve(t, "127.0.3.12:0", "b")
	entry := netip.MustParseAddrPort("127.0.3.10:" + fmt.Sprint(a.Port()))
	table := TableName(fmt.Sprintf("kptest-%d", os.Getpid()))
	k := New(table)
	t.Cleanup(func() {
		if err := k.Drop(); err != nil {
			t.Errorf("drop: %v", err)
		}
	})
	ctx := context.Background()
	fwd := Forward{Addon: "r1", Entry: entry, Primary: a, MaxConn: 3}
	res, err := k.Apply(ctx, []Forward{fwd})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Added != 5 {
		t.Fatalf("added %d rules, want 5", res.Added)
	}
	if res, err := k.Apply(ctx, []Forward{fwd}); err != nil || res.Added+res.Deleted != 0 {
		t.Fatalf("second apply: %+v %v, want nothing", res, err)
	}
	c1, got := dialAsk(t, entry)
	defer c1.Close()
	if got != "a" {
		t.Fatalf("through the entry: %q, want a", got)
	}

	// An agent restart: primary unknown, the dnat kept, nothing else.
	k2 := New(table)
	if res, err := k2.Apply(ctx, []Forward{{Addon: "r1", Entry: entry, MaxConn: 3}}); err != nil || res.Added+res.Deleted != 0 {
		t.Fatalf("restart apply: %+v %v, want nothing", res, err)
	}

	// The cap: 3 connections, the 4th refused with a reset.
	c2, _ := dialAsk(t, entry)
	defer c2.Close()
	c3, _ := dialAsk(t, entry)
	defer c3.Close()
	if c4, err := net.DialTimeout("tcp", entry.String(), 2*time.Second); err == nil {
		c4.Close()
		t.Fatal("the 4th connection was accepted, want refused")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the 4th connection: %v, want connection refused", err)
	}
	c3.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", entry.String(), 2*time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed connection's place is not freed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A switch: the dnat moves, the old connections are cut.
	fwd.Primary = b
	res, err = k.Apply(ctx, []Forward{fwd})
	if err != nil {
		t.Fatalf("switch: %v", err)
	}
	if res.Added != 3 || res.Deleted != 3 || len(res.Cuts) != 1 || res.Cuts[0].From != a || res.Cuts[0].Primary != b {
		t.Fatalf("switch: %+v, want 3 dnat rules replaced and one cut from a to b", res)
	}
	if n, err := CutStale(res.Cuts[0]); err != nil || n < 2 {
		t.Fatalf("cut: %d conntrack entries deleted, %v; want ≥ 2", n, err)
	}
	if got, err := ask(c1); err == nil {
		t.Fatalf("an old connection still answers (%q) after the switch", got)
	}
	c5, got := dialAsk(t, entry)
	defer c5.Close()
	if got != "b" {
		t.Fatalf("after the switch: %q, want b", got)
	}

	// Removed: the table goes.
	if res, err := k.Apply(ctx, nil); err != nil || !res.Dropped {
		t.Fatalf("remove: %+v %v, want the table dropped", res, err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTableOfFamily(table, nftables.TableFamilyIPv4); err == nil {
		t.Fatalf("table %s still there", table)
	}
}
