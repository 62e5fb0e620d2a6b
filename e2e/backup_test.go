package e2e

// Backups end to end (issue 12): a business addon with 50,000 keys;
// `backups-create` dumps it on the replica (its rdb_last_save_time moves,
// the primary's does not), the agent restore-drills it (verified); the
// stored object holds no plaintext; `backups-download` writes the archive,
// whose dump.rdb loads into a separate redis-server with the same keys and
// values; after FLUSHALL, `backups-restore` brings every key back on the
// primary and its replica; a restore without --confirm is refused; one
// flipped byte in the stored object makes download and restore refuse
// with a clear error, and the addon's data stays as it was.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

const (
	bkCoordIP   = "127.0.0.220"
	bkVIPPool   = "127.0.24.0/24"
	bkScratchIP = "127.0.0.225"
	bkKeys      = 50000
)

var bkHostIPs = []string{"127.0.0.221", "127.0.0.222", "127.0.0.223", "127.0.0.224"}

func bkKey(i int) string   { return fmt.Sprintf("bk:%05d", i) }
func bkValue(i int) string { return fmt.Sprintf("value-%05d-%s", i, strings.Repeat("v", 40)) }

// lastSave reads rdb_last_save_time of the redis at addr.
func (f *bizFleet) lastSave(t testing.TB, addr string) int64 {
	t.Helper()
	c := f.direct(addr)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.Info(ctx, "persistence").Result()
	if err != nil {
		t.Fatalf("INFO persistence of %s: %v", addr, err)
	}
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "rdb_last_save_time:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("no rdb_last_save_time from %s", addr)
	return 0
}

// backupsOf lists app's backups through the CLI.
func backupsOf(t testing.TB, c *Coordinator, app string) []api.Backup {
	t.Helper()
	res := c.CLI("--json", "backups", "--app", app)
	if res.Code != 0 {
		t.Fatalf("backups: %s", res)
	}
	var out []api.Backup
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		var wrapped struct {
			Backups []api.Backup `json:"backups"`
		}
		if err2 := json.Unmarshal([]byte(res.Stdout), &wrapped); err2 != nil {
			t.Fatalf("backups --json: %v / %v: %s", err, err2, res.Stdout)
		}
		out = wrapped.Backups
	}
	return out
}

// dbsize is the key count of the redis behind c.
func dbsize(t testing.TB, c *redis.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.DBSize(ctx).Result()
	if err != nil {
		t.Fatalf("DBSIZE: %v", err)
	}
	return n
}

// checkSample checks a sample of the filled keys (and the needle) on c.
func checkSample(t testing.TB, c *redis.Client, needle, where string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, i := range []int{0, 1, 777, 12345, 33333, bkKeys - 1} {
		v, err := c.Get(ctx, bkKey(i)).Result()
		if err != nil || v != bkValue(i) {
			return fmt.Errorf("%s: %s = %q, %v", where, bkKey(i), v, err)
		}
	}
	if v, err := c.Get(ctx, "needle").Result(); err != nil || v != needle {
		return fmt.Errorf("%s: needle = %q, %v", where, v, err)
	}
	if ttl, err := c.TTL(ctx, "with-ttl").Result(); err != nil || ttl <= 0 || ttl > time.Hour {
		return fmt.Errorf("%s: with-ttl has TTL %s, %v; want under an hour", where, ttl, err)
	}
	return nil
}

// unpackRDB extracts dump.rdb from a backup archive into dir.
func unpackRDB(t testing.TB, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s is not gzip: %v", archive, err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: tar: %v", archive, err)
		}
		names = append(names, h.Name)
		if filepath.Base(h.Name) != "dump.rdb" {
			continue
		}
		out, err := os.Create(filepath.Join(dir, "dump.rdb"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
		return
	}
	t.Fatalf("%s holds no dump.rdb: %v", archive, names)
}

// loadRDB serves dir/dump.rdb with a plain redis-server on the scratch
// address and returns a client of it.
func loadRDB(t testing.TB, dir string) *redis.Client {
	t.Helper()
	port := testutil.FreePort(t, bkScratchIP)
	cmd := exec.Command("redis-server", "--bind", bkScratchIP, "--port", strconv.Itoa(port), "--dir", dir,
		"--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--protected-mode", "no")
	cmd.Stdout, cmd.Stderr = testutil.Writer(t), testutil.Writer(t)
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server (make deps installs it): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(bkScratchIP, strconv.Itoa(port)), MaxRetries: -1, DisableIdentity: true})
	t.Cleanup(func() { c.Close() })
	testutil.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := c.Info(ctx, "persistence").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(s, "loading:0") {
			return fmt.Errorf("still loading")
		}
		return nil
	})
	return c
}

// waitIdle waits until app's addon runs no operation.
func waitIdle(t testing.TB, c *Coordinator, app string) {
	t.Helper()
	testutil.WaitFor(t, 2*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ops, err := c.Client().Operations(ctx, app, "")
		if err != nil {
			return err
		}
		for _, op := range ops {
			if !op.State.Finished() {
				return fmt.Errorf("operation %s (%s) is %s", op.ID, op.Kind, op.State)
			}
		}
		return nil
	})
}

func TestBackupEndToEnd(t *testing.T) {
	f := startBusiness(t, "backup-e2e", bizOpts{CoordIP: bkCoordIP, HostIPs: bkHostIPs, VIPPool: bkVIPPool})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	needle := "needle-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-plaintext-marker"
	for i := 0; i < bkKeys; i += 1000 {
		pipe := rc.Pipeline()
		for j := i; j < i+1000; j++ {
			pipe.Set(ctx, bkKey(j), bkValue(j), 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("fill: %v", err)
		}
	}
	if err := rc.Set(ctx, "needle", needle, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, "with-ttl", "x", 50*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	f.waitHealthy(60 * time.Second) // the replica holds it all
	total := dbsize(t, rc)          // the fill, the needle, the TTL key and the health check's key
	a := f.mustAddon()
	prim := f.primary()
	var repl api.Member
	for _, m := range membersOf(a, api.RoleRedis) {
		if m.ID != prim.ID {
			repl = m
		}
	}
	primSave, replSave := f.lastSave(t, f.memberAddr(prim)), f.lastSave(t, f.memberAddr(repl))
	// rdb_last_save_time counts seconds: a save in the same second as the
	// last one would not move it.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if now := time.Now().Unix(); now <= replSave || now <= primSave {
			return fmt.Errorf("still the second of the last save")
		}
		return nil
	})

	// --- backups-create: on the replica, verified.
	start := time.Now()
	if res := f.c.CLI("backups-create", "--app", f.app, "--wait"); res.Code != 0 {
		t.Fatalf("backups-create --wait: %s", res)
	}
	took := time.Since(start)
	// The day's periodic backup may run too (the schedule takes today's
	// at once for an addon made after today's start time): the manual one.
	var manual []api.Backup
	for _, x := range backupsOf(t, f.c, f.app) {
		if x.Kind == api.BackupManual {
			manual = append(manual, x)
		}
	}
	if len(manual) != 1 {
		t.Fatalf("manual backups after one backups-create: %+v", manual)
	}
	b := manual[0]
	t.Logf("backup %s: %s, %d bytes, %d keys, member %s, %s (backups-create --wait took %s)", b.ID, b.Status, b.SizeBytes, b.Keys, b.MemberID, b.Verified, took.Round(time.Millisecond))
	if b.Status != api.BackupDone || b.Kind != api.BackupManual || b.MemberID != repl.ID || b.SizeBytes <= 0 || b.Checksum == "" || b.KeyID == "" {
		t.Fatalf("backup record %+v: want done, manual, taken on the replica %s, with size, checksum and key id", b, repl.ID)
	}
	if !strings.HasPrefix(b.Verified, api.VerifiedPrefix) || b.Keys != total {
		t.Fatalf("backup verified %q with %d keys; want verified with %d", b.Verified, b.Keys, total)
	}
	if got := f.lastSave(t, f.memberAddr(repl)); got <= replSave {
		t.Errorf("the replica's rdb_last_save_time did not move (%d -> %d): the dump was not taken there", replSave, got)
	}
	if got := f.lastSave(t, f.memberAddr(prim)); got != primSave {
		t.Errorf("the primary saved (rdb_last_save_time %d -> %d): a backup must never dump the primary", primSave, got)
	}
	res := f.c.CLI("backups", "--app", f.app)
	for _, want := range []string{b.ID, "done", "yes"} { // VERIFIED: yes
		if res.Code != 0 || !strings.Contains(res.Stdout, want) {
			t.Fatalf("backups does not show %q: %s", want, res)
		}
	}

	// --- the stored object: no plaintext.
	stored := filepath.Join(f.c.DataDir, "backups", filepath.FromSlash(b.StoreKey))
	raw, err := os.ReadFile(stored)
	if err != nil {
		t.Fatalf("the stored object: %v", err)
	}
	if int64(len(raw)) != b.SizeBytes {
		t.Errorf("stored object is %d bytes, the record says %d", len(raw), b.SizeBytes)
	}
	for _, plain := range []string{needle, bkValue(12345), "REDIS00"} {
		if bytes.Contains(raw, []byte(plain)) {
			t.Fatalf("the stored object holds %q in plaintext", plain)
		}
	}

	// --- download: the archive's dump.rdb loads with the same keys.
	dl := t.TempDir()
	if res := f.c.CLI("backups-download", "--app", f.app, "--backup", b.ID, "--output", dl); res.Code != 0 {
		t.Fatalf("backups-download: %s", res)
	}
	archive := filepath.Join(dl, backup.DownloadName(b))
	if _, err := os.Stat(archive); err != nil {
		entries, _ := os.ReadDir(dl)
		t.Fatalf("download wrote no %s (%v): %v", backup.DownloadName(b), err, entries)
	}
	scratch := t.TempDir()
	unpackRDB(t, archive, scratch)
	loaded := loadRDB(t, scratch)
	if n := dbsize(t, loaded); n != total {
		t.Fatalf("the downloaded dump.rdb loads %d keys; want %d", n, total)
	}
	if err := checkSample(t, loaded, needle, "downloaded dump"); err != nil {
		t.Fatal(err)
	}

	// --- restore: refused without the confirmation; with it, every key back.
	waitIdle(t, f.c, f.app) // one operation per addon: a periodic backup may be running
	if res := f.c.CLI("backups-restore", "--app", f.app, "--backup", b.ID); res.Code == 0 || !strings.Contains(res.Stderr, "--confirm") {
		t.Fatalf("backups-restore without --confirm: %s", res)
	}
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	replica := f.direct(f.memberAddr(repl))
	defer replica.Close()
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := dbsize(t, replica); n != 0 {
			return fmt.Errorf("replica holds %d keys after FLUSHALL", n)
		}
		return nil
	})
	start = time.Now()
	if res := f.c.CLI("backups-restore", "--app", f.app, "--backup", b.ID, "--confirm", f.app, "--wait"); res.Code != 0 {
		t.Fatalf("backups-restore: %s", res)
	}
	t.Logf("restore of %d keys took %s", total, time.Since(start).Round(time.Millisecond))
	if n := dbsize(t, rc); n != total {
		t.Fatalf("%d keys after the restore; want %d", n, total)
	}
	if err := checkSample(t, rc, needle, "restored primary"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		if n := dbsize(t, replica); n != total {
			return fmt.Errorf("replica holds %d keys; want %d", n, total)
		}
		return checkSample(t, replica, needle, "replica after the restore")
	})
	WaitForAddonStatus(t, f.c, f.app, api.AddonRunning, 30*time.Second)

	// --- one flipped byte: download and restore refuse; nothing changes.
	raw[len(raw)/2] ^= 0x01
	if err := os.WriteFile(stored, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, "after-restore", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before := dbsize(t, rc)
	dl2 := t.TempDir()
	res = f.c.CLI("backups-download", "--app", f.app, "--backup", b.ID, "--output", dl2)
	if res.Code == 0 || !strings.Contains(res.Stderr, "corrupt") {
		t.Fatalf("download of a corrupt backup: %s; want a refusal saying corrupt", res)
	}
	if entries, _ := os.ReadDir(dl2); len(entries) != 0 {
		t.Fatalf("a refused download left files: %v", entries)
	}
	waitIdle(t, f.c, f.app)
	res = f.c.CLI("backups-restore", "--app", f.app, "--backup", b.ID, "--confirm", f.app, "--wait")
	if res.Code == 0 || !strings.Contains(res.Stdout+res.Stderr, "corrupt") {
		t.Fatalf("restore of a corrupt backup: %s; want a failure saying corrupt", res)
	}
	t.Logf("corrupt backup refused: %s", strings.TrimSpace(res.Stdout+res.Stderr))
	if n := dbsize(t, rc); n != before {
		t.Fatalf("%d keys after a refused restore; it had %d", n, before)
	}
	if v, err := rc.Get(ctx, "after-restore").Result(); err != nil || v != "kept" {
		t.Fatalf("a refused restore changed the data: after-restore = %q, %v", v, err)
	}
	WaitForAddonStatus(t, f.c, f.app, api.AddonRunning, 30*time.Second)
}
