package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// Addresses of the password rotation test (its own: no leftover of
// another test is ever met).
const (
	rotCoordIP = "127.0.0.105"
	rotVIPPool = "127.0.27.0/24"
)

var rotHostIPs = []string{"127.0.0.106", "127.0.0.107", "127.0.0.108", "127.0.0.109"}

// TestPasswordRotation: addons-password-rotate on a business addon while
// a go-redis writer uses the OLD URL: 0 failed commands. During the grace
// period the connection opened with the old password and new connections
// with the old URL work, as does the new URL that env now prints; a redis
// member restarted in the grace period accepts both passwords; a second
// rotation is refused (409) while it runs and during its grace period. The
// rotation operation ends once the app is told, so healing is never held
// up by a grace period: the replica's host is drained during it, every
// member there is replaced at once, and the new redis replica accepts both
// passwords. Nothing else restarts. The writer then switches to the new
// URL (0 failed commands), and after --finish a retire operation of its
// own makes every member (the replacement too) and the URL refuse the old
// password, the new one works, the addon is running and healthy
// (sentinels, HAProxy), the connection opened with the old password still
// works, and no log holds a password.
func TestPasswordRotation(t *testing.T) {
	const app = "rotate-app"
	f := startBusiness(t, app, bizOpts{CoordIP: rotCoordIP, HostIPs: rotHostIPs, VIPPool: rotVIPPool})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oldURL, oldOpt := f.url, f.opt
	oldPW := oldOpt.Password
	before := pids(t, f.agents, f.mustAddon())

	// A connection opened with the old password, kept open throughout.
	o := *oldOpt
	o.PoolSize, o.MinIdleConns, o.ConnMaxIdleTime = 1, 1, 0
	open := redis.NewClient(&o)
	defer open.Close()
	if err := open.Set(ctx, "rot:open", "0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	w := startWriter(oldOpt, "rot:old:")
	w.waitAcksAfter(t, time.Now(), 50, 10*time.Second)

	start := time.Now()
	res := f.c.CLI("addons-password-rotate", "--app", app, "--grace", "1h")
	if res.Code != 0 || !strings.Contains(res.Stdout, "rotating its password") {
		t.Fatalf("addons-password-rotate: %s", res)
	}
	if strings.Contains(res.Stdout+res.Stderr, oldPW) {
		t.Fatal("addons-password-rotate printed the password")
	}
	again := f.c.CLI("addons-password-rotate", "--app", app)
	// Refused either way: the rotation running, or (it takes under a
	// second) its grace period.
	if again.Code != 2 || !(strings.Contains(again.Stderr, "already rotating its password") || strings.Contains(again.Stderr, "grace period of its previous rotation")) ||
		!strings.Contains(again.Stderr, "--finish") {
		t.Fatalf("second rotation: %s", again)
	}

	// The new URL is published, then the rotation ends: the grace period is
	// the addon's.
	var newURL string
	testutil.WaitFor(t, 30*time.Second, func() error {
		if newURL = RedisURL(t, f.c, app); newURL == oldURL {
			return errors.New("env still prints the old URL")
		}
		return nil
	})
	published := time.Since(start)
	newOpt, err := redis.ParseURL(newURL)
	if err != nil {
		t.Fatalf("parse the new URL: %v", err)
	}
	newPW := newOpt.Password
	if newPW == oldPW || len(newPW) != 64 || newOpt.Addr != oldOpt.Addr || newOpt.Username != "default" {
		t.Fatalf("new URL: same password %v, length %d, address %s (was %s), user %q", newPW == oldPW, len(newPW), newOpt.Addr, oldOpt.Addr, newOpt.Username)
	}
	op := rotation(t, f)
	testutil.WaitFor(t, 30*time.Second, func() error {
		op = rotation(t, f)
		if op.State != api.OpDone || len(op.Steps) != 5 || !strings.Contains(op.Steps[4].Detail, "--finish") {
			return fmt.Errorf("rotation %s is %s at %+v", op.ID, op.State, op.Steps)
		}
		return nil
	})
	if a := f.mustAddon(); a.OldPasswordUntil.Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("grace period recorded until %s, want about an hour from now", a.OldPasswordUntil)
	}
	t.Logf("new URL published %s after the request; grace step: %s", published.Round(time.Millisecond), op.Steps[4].Detail)
	again = f.c.CLI("addons-password-rotate", "--app", app)
	if again.Code != 2 || !strings.Contains(again.Stderr, "grace period of its previous rotation") || !strings.Contains(again.Stderr, "--finish") {
		t.Fatalf("rotation during the grace period: %s", again)
	}
	if op.Steps[3].Name != "notify app" || op.Steps[3].State != api.OpDone {
		t.Errorf("notify app step: %+v", op.Steps[3])
	}

	// Grace period: both passwords everywhere.
	a := f.mustAddon()
	for _, m := range membersOf(a, api.RoleRedis) {
		for name, pw := range map[string]string{"old": oldPW, "new": newPW} {
			if err := appAuth(ctx, f.memberAddr(m), pw); err != nil {
				t.Errorf("grace period: %s with the %s password: %v", m.ID, name, err)
			}
		}
	}
	for name, opt := range map[string]*redis.Options{"old": oldOpt, "new": newOpt} {
		c := redis.NewClient(opt)
		if err := c.Set(ctx, "rot:"+name, "1", 0).Err(); err != nil {
			t.Errorf("grace period: a new connection with the %s URL: %v", name, err)
		}
		c.Close()
	}
	if err := open.Incr(ctx, "rot:open").Err(); err != nil {
		t.Errorf("grace period: the connection opened with the old password: %v", err)
	}

	// A redis member restarted in the grace period accepts both: its
	// redis.conf has the URL's password, its agent adds the old one live.
	var replica api.Member
	for _, m := range membersOf(a, api.RoleRedis) {
		if m.RedisRole != "primary" {
			replica = m
		}
	}
	pid := f.pidOf(replica.HostID, replica.ID)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill replica %s: %v", replica.ID, err)
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		if p := f.pidOf(replica.HostID, replica.ID); p == 0 || p == pid {
			return fmt.Errorf("replica %s not restarted yet", replica.ID)
		}
		for name, pw := range map[string]string{"old": oldPW, "new": newPW} {
			if err := appAuth(ctx, f.memberAddr(replica), pw); err != nil {
				return fmt.Errorf("restarted %s, %s password: %w", replica.ID, name, err)
			}
		}
		return nil
	})
	f.waitHealthy(60 * time.Second) // the replica in sync again (f.opt: the old URL)

	// Healing during the grace period: the replica's host is drained, its
	// members are replaced now (not after the grace period), and the new
	// redis replica accepts both passwords.
	drained := replica.HostID
	healStart := time.Now()
	if res := f.c.CLI("hosts-drain", drained); res.Code != 0 {
		t.Fatalf("hosts-drain %s: %s", drained, res)
	}
	f.waitRedundant(drained, 120*time.Second)
	a = f.mustAddon()
	var replacement api.Member
	for _, m := range membersOf(a, api.RoleRedis) {
		if _, old := before[m.ID]; !old {
			replacement = m
		}
	}
	if replacement.ID == "" || replacement.HostID == drained {
		t.Fatalf("no redis replacement off host %s: %+v", drained, membersOf(a, api.RoleRedis))
	}
	for name, pw := range map[string]string{"old": oldPW, "new": newPW} {
		if err := appAuth(ctx, f.memberAddr(replacement), pw); err != nil {
			t.Errorf("replacement %s during the grace period, %s password: %v", replacement.ID, name, err)
		}
	}
	t.Logf("host %s drained during the grace period: redundant again in %s, replacement %s on %s accepts both passwords",
		drained, time.Since(healStart).Round(time.Millisecond), replacement.ID, replacement.HostID)

	// The writer on the old URL: not one failed command. Then the app
	// moves to the new URL.
	acks, failed, errs := w.finish()
	if failed > 0 {
		t.Errorf("writer on the old URL: %d failed commands during the rotation: %v", failed, errs)
	}
	gap, at := longestGap(acks, start)
	t.Logf("writer on the old URL: %d writes, %d failed, longest gap %s at %s", len(acks), failed, gap.Round(time.Millisecond), at.Format("15:04:05.000"))
	w2 := startWriter(newOpt, "rot:new:")
	w2.waitAcksAfter(t, time.Now(), 50, 10*time.Second)

	fin := f.c.CLI("addons-password-rotate", "--app", app, "--finish")
	if fin.Code != 0 || !strings.Contains(fin.Stdout, "ends now") {
		t.Fatalf("--finish: %s", fin)
	}
	var retire api.Operation
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, o := range opsOf(t, f, app) {
			if o.Kind == api.OpRotatePassword && len(o.Steps) > 0 && o.Steps[0].Name == "retire old password" {
				retire = o
			}
		}
		if retire.State != api.OpDone {
			return fmt.Errorf("retire operation %q is %s at %+v", retire.ID, retire.State, retire.Steps)
		}
		return nil
	})
	for i, s := range retire.Steps {
		if s.State != api.OpDone {
			t.Errorf("retire step %d: %+v", i, s)
		}
	}
	// After: the old password is refused everywhere, the new one works.
	a = f.mustAddon()
	if a.Status != api.AddonRunning {
		t.Errorf("addon is %s", a.Status)
	}
	for _, m := range membersOf(a, api.RoleRedis) {
		if err := appAuth(ctx, f.memberAddr(m), oldPW); err == nil || !authRefused(err) {
			t.Errorf("%s accepts the old password after --finish: %v", m.ID, err)
		}
		if err := appAuth(ctx, f.memberAddr(m), newPW); err != nil {
			t.Errorf("%s, new password: %v", m.ID, err)
		}
	}
	oldC := redis.NewClient(&redis.Options{Addr: oldOpt.Addr, Username: "default", Password: oldPW, MaxRetries: -1, DisableIdentity: true})
	if err := oldC.Ping(ctx).Err(); err == nil || !authRefused(err) {
		t.Errorf("the old URL after --finish: %v", err)
	}
	oldC.Close()
	if err := open.Incr(ctx, "rot:open").Err(); err != nil {
		t.Errorf("the connection opened with the old password, after --finish: %v", err)
	}
	f.url, f.opt = newURL, newOpt
	f.waitHealthy(30 * time.Second)
	acks2, failed2, errs2 := w2.finish()
	if failed2 > 0 {
		t.Errorf("writer on the new URL: %d failed commands: %v", failed2, errs2)
	}
	check := redis.NewClient(newOpt)
	defer check.Close()
	if lost := missing(t, check, "rot:old:", acks); len(lost) > 0 {
		t.Errorf("%d acknowledged writes on the old URL missing", len(lost))
	}
	t.Logf("writer on the new URL: %d writes, %d failed", len(acks2), failed2)

	// Nothing restarted but the replica this test killed and the members
	// moved off the drained host.
	after := pids(t, f.agents, f.mustAddon())
	for id := range before {
		if _, kept := after[id]; !kept || id == replica.ID {
			delete(before, id)
		}
	}
	samePids(t, before, after)

	// No log holds either password.
	logs := []string{f.c.LogPath, filepath.Join(f.c.DataDir, "audit.log")}
	for _, ag := range f.agents {
		logs = append(logs, ag.LogPath)
	}
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for name, pw := range map[string]string{"old": oldPW, "new": newPW} {
			if strings.Contains(string(b), pw) {
				t.Errorf("%s holds the %s password", p, name)
			}
		}
	}
}

// rotation is the addon's latest rotate-password operation.
func rotation(t testing.TB, f *bizFleet) api.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ops, err := f.c.Client().Operations(ctx, f.app, "")
	if err != nil {
		t.Fatalf("operations: %v", err)
	}
	var out api.Operation
	for _, op := range ops {
		if op.Kind == api.OpRotatePassword && op.CreatedAt.After(out.CreatedAt) {
			out = op
		}
	}
	if out.ID == "" {
		t.Fatal("no rotate-password operation")
	}
	return out
}

// appAuth opens a new connection to addr as the app's default user with
// pw and PINGs.
func appAuth(ctx context.Context, addr, pw string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Username: "default", Password: pw, DialTimeout: 2 * time.Second,
		ReadTimeout: 2 * time.Second, MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
	defer c.Close()
	return c.Ping(ctx).Err()
}

// authRefused: redis refused the credentials (not a network error).
func authRefused(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "invalid username-password"))
}
