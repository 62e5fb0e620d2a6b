package redisctl

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestIdentityDrift(t *testing.T) {
	want := Identity{Bind: "127.0.0.11", Port: 7000, Dir: "/data/m1", AnnounceIP: "127.0.0.11"}
	same := map[string]string{"bind": "127.0.0.11", "port": "7000", "dir": "/data/m1/", "replica-announce-ip": "127.0.0.11", "replica-announce-port": "0"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range same {
			m[a] = b
		}
		if v == "<missing>" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		got  map[string]string
		want []string // drifted names
	}{
		{"as rendered", same, nil},
		{"bind moved", with("bind", "127.0.0.99"), []string{"bind"}},
		{"bind grew", with("bind", "127.0.0.11 0.0.0.0"), []string{"bind"}},
		{"port moved", with("port", "7001"), []string{"port"}},
		{"dir moved", with("dir", "/tmp"), []string{"dir"}},
		{"announce ip", with("replica-announce-ip", "10.0.0.1"), []string{"replica-announce-ip"}},
		{"announce ip cleared", with("replica-announce-ip", ""), []string{"replica-announce-ip"}},
		{"announce port", with("replica-announce-port", "1234"), []string{"replica-announce-port"}},
		{"missing answer", with("port", "<missing>"), []string{"port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var names []string
			for _, d := range IdentityDrift(want, tt.got) {
				names = append(names, d.Name)
				if d.Want == d.Got {
					t.Errorf("drift %v has want == got", d)
				}
			}
			if fmt.Sprint(names) != fmt.Sprint(tt.want) {
				t.Fatalf("IdentityDrift = %v, want %v", names, tt.want)
			}
		})
	}
	if !AnnounceDrifted([]Drift{{Name: ParamAnnouncePort}}) || AnnounceDrifted([]Drift{{Name: ParamBind}}) {
		t.Error("AnnounceDrifted")
	}
}

func memberClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(MemberOptions(addr, testPassword))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Knock against a real redis: PONG when it serves, silent while a script
// runs under busy-reply-threshold, -BUSY past it, refused once its bind
// moved; identity drift read, put back, and a replica's primary learns the
// restored announce address.
func TestRealKnockAndIdentity(t *testing.T) {
	ctx := context.Background()
	primary := startRedis(t, ip1, "")
	replica := startRedis(t, ip2, primary)
	pc, rc := memberClient(t, primary), memberClient(t, replica)
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := ClientReplication(ctx, pc)
		if err != nil {
			return err
		}
		if len(r.Replicas) != 1 || r.Replicas[0].State != "online" {
			return fmt.Errorf("replicas %+v", r.Replicas)
		}
		return nil
	})

	if a := Knock(ctx, primary, testPassword, true, time.Second, time.Second); a.ConnErr != nil || a.Reply != ReplyPong {
		t.Fatalf("Knock on a serving member = %+v", a)
	}
	if a := Knock(ctx, primary, "wrong-password", true, time.Second, time.Second); a.Reply != ReplyOther || strings.Contains(a.Text, "wrong-password") {
		t.Fatalf("Knock with a wrong password = %+v", a)
	}
	if a := Knock(ctx, deadAddr(t, ip1), "", false, time.Second, 0); a.Accepted() {
		t.Fatalf("Knock on a dead address = %+v", a)
	}

	// A 1.5 s script: silent under busy-reply-threshold, -BUSY past it.
	script := func() chan error {
		done := make(chan error, 1)
		c := redis.NewClient(MemberOptions(primary, testPassword))
		c.Options().ReadTimeout = 10 * time.Second
		go func() {
			defer c.Close()
			done <- c.Eval(ctx, `local t = redis.call('TIME'); local stop = t[1]*1000000 + t[2] + 1500000
				repeat t = redis.call('TIME') until t[1]*1000000 + t[2] >= stop
				return 1`, nil).Err()
		}()
		return done
	}
	waitReply := func(want ReplyKind) {
		t.Helper()
		testutil.WaitFor(t, 2*time.Second, func() error {
			if a := Knock(ctx, primary, testPassword, true, time.Second, 300*time.Millisecond); a.Reply != want {
				return fmt.Errorf("reply %v (%q), want %v", a.Reply, a.Text, want)
			}
			return nil
		})
	}
	done := script()
	waitReply(ReplySilent)
	if err := <-done; err != nil {
		t.Fatalf("script: %v", err)
	}
	if err := pc.ConfigSet(ctx, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	done = script()
	waitReply(ReplyBusy)
	if err := <-done; err != nil {
		t.Fatalf("script: %v", err)
	}

	// Identity drift on the replica: announce ip and port.
	rhost, rport, _ := net.SplitHostPort(replica)
	want := Identity{Bind: rhost, Port: atoiT(t, rport), Dir: configGet(t, rc, "dir"), AnnounceIP: rhost}
	got, err := GetIdentity(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	if d := IdentityDrift(want, got); len(d) != 0 {
		t.Fatalf("drift on a fresh member: %v", d)
	}
	if err := rc.ConfigSet(ctx, ParamAnnounceIP, "10.9.9.9").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigSet(ctx, ParamAnnouncePort, "1234").Err(); err != nil {
		t.Fatal(err)
	}
	if err := ResetMasterLink(ctx, rc); err != nil { // the primary now records the drifted address
		t.Fatal(err)
	}
	primarySees := func(want string) func() error {
		return func() error {
			r, err := ClientReplication(ctx, pc)
			if err != nil {
				return err
			}
			if len(r.Replicas) != 1 || r.Replicas[0].Addr() != want {
				return fmt.Errorf("primary sees %+v, want %s", r.Replicas, want)
			}
			return nil
		}
	}
	testutil.WaitFor(t, 5*time.Second, primarySees("10.9.9.9:1234"))
	got, err = GetIdentity(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	drifts := IdentityDrift(want, got)
	if len(drifts) != 2 || !AnnounceDrifted(drifts) {
		t.Fatalf("drifts %v, want the announce ip and port", drifts)
	}
	done2, err := RestoreIdentity(ctx, rc, drifts)
	if err != nil || len(done2) != 2 {
		t.Fatalf("RestoreIdentity = %v, %v", done2, err)
	}
	if err := ResetMasterLink(ctx, rc); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, primarySees(replica))

	// A refused restore stops and says which parameter.
	if _, err := RestoreIdentity(ctx, rc, []Drift{{Name: "no-such-param", Want: "x"}}); err == nil || !strings.Contains(err.Error(), "no-such-param") {
		t.Fatalf("RestoreIdentity of an unknown parameter: %v", err)
	}

	// bind moved: the address refuses new connections; the pooled
	// connection still works and puts it back.
	if err := rc.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ConfigSet(ctx, ParamBind, "127.0.0.99").Err(); err != nil {
		t.Fatal(err)
	}
	if a := Knock(ctx, replica, testPassword, true, time.Second, time.Second); a.Accepted() {
		t.Fatalf("Knock after the bind moved = %+v", a)
	}
	got, err = GetIdentity(ctx, rc)
	if err != nil {
		t.Fatalf("the pooled connection is gone: %v", err)
	}
	if _, err := RestoreIdentity(ctx, rc, IdentityDrift(want, got)); err != nil {
		t.Fatal(err)
	}
	if a := Knock(ctx, replica, testPassword, true, time.Second, time.Second); a.Reply != ReplyPong {
		t.Fatalf("Knock after the bind was put back = %+v", a)
	}

	// REPLICAOF through an open client.
	if err := ClientReplicaOf(ctx, rc, "not-an-address"); err == nil {
		t.Fatal("ClientReplicaOf accepted a bad address")
	}
	if err := ClientReplicaOf(ctx, rc, primary); err != nil {
		t.Fatal(err)
	}
}

func configGet(t *testing.T, c *redis.Client, name string) string {
	t.Helper()
	v, err := c.ConfigGet(context.Background(), name).Result()
	if err != nil {
		t.Fatal(err)
	}
	return v[name]
}

func atoiT(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A Looker against a real redis: the first look opens a connection, the
// next ones PING on it; a moved bind is seen only by a fresh connection
// (FreshEvery or mustFresh); a connection that broke is replaced in the
// same look, so a member gone is refused at once.
func TestRealLooker(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t, ip1, "")
	c := memberClient(t, addr)
	l := NewLooker(addr, testPassword, false, true, time.Hour)
	defer l.Close()
	look := func(mustFresh bool) (Answer, bool) { return l.Look(ctx, time.Second, time.Second, mustFresh) }
	if a, fresh := look(false); a.Reply != ReplyPong || !fresh {
		t.Fatalf("first look = %+v, fresh %v; want PONG on a new connection", a, fresh)
	}
	for range 3 {
		if a, fresh := look(false); a.Reply != ReplyPong || fresh {
			t.Fatalf("next look = %+v, fresh %v; want PONG on the kept connection", a, fresh)
		}
	}
	host, _, _ := net.SplitHostPort(addr)
	if err := c.ConfigSet(ctx, ParamBind, ip2).Err(); err != nil {
		t.Fatal(err)
	}
	if a, fresh := look(false); a.Reply != ReplyPong || fresh {
		t.Fatalf("kept connection after the bind moved = %+v, fresh %v; want PONG", a, fresh)
	}
	if a, fresh := look(true); a.Accepted() || !fresh {
		t.Fatalf("fresh look after the bind moved = %+v; want refused", a)
	}
	if err := c.ConfigSet(ctx, ParamBind, host).Err(); err != nil {
		t.Fatal(err)
	}
	short := NewLooker(addr, testPassword, false, true, 50*time.Millisecond)
	defer short.Close()
	if a, fresh := short.Look(ctx, time.Second, time.Second, false); a.Reply != ReplyPong || !fresh {
		t.Fatalf("first look = %+v, fresh %v", a, fresh)
	}
	testutil.WaitFor(t, 2*time.Second, func() error {
		if a, fresh := short.Look(ctx, time.Second, time.Second, false); a.Reply != ReplyPong || !fresh {
			return fmt.Errorf("look = %+v, fresh %v; want a new connection once FreshEvery passed", a, fresh)
		}
		return nil
	})
	if a, _ := look(true); a.Reply != ReplyPong {
		t.Fatalf("look with the bind back = %+v", a)
	}
	// The member goes (SHUTDOWN closes every connection): the kept
	// connection breaks and the same look tries a new one, refused.
	_ = c.Do(ctx, "SHUTDOWN", "NOSAVE").Err()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if a, fresh := look(false); a.Accepted() || !fresh {
			return fmt.Errorf("look after SHUTDOWN = %+v, fresh %v; want refused on a new connection", a, fresh)
		}
		return nil
	})
	tcp := NewLooker(deadAddr(t, ip1), "", false, false, time.Hour)
	if a, _ := tcp.Look(ctx, time.Second, 0, false); a.Accepted() {
		t.Fatalf("TCP look at a dead address = %+v", a)
	}
}
