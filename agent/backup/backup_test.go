package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/packaging"
	"github.com/cacheplane/cacheplane/redisctl"
)

// noSaves keeps a test's servers from saving on their own: every save in
// these tests is one a test asked for.
const noSaves = `save ""`

// populate writes 50,000 keys of every type over databases 0-4 into the
// primary at addr: 1 in 10 strings with a 2 h TTL, one key "known" whose
// value is returned (the tests look for it in the stored object).
func populate(t *testing.T, addr string) (known string) {
	t.Helper()
	ctx := context.Background()
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	known = "cacheplane-known-value-" + hex.EncodeToString(rnd[:])
	counts := []int{29999, 5000, 5000, 5000, 5000}
	for db, n := range counts {
		c := client(t, addr, testPassword, db)
		for i := 0; i < n; i += 1000 {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for j := i; j < min(i+1000, n); j++ {
					k := fmt.Sprintf("k:%d:%d", db, j)
					switch db {
					case 0:
						var ttl time.Duration
						if j%10 == 0 {
							ttl = 2 * time.Hour
						}
						p.Set(ctx, k, fmt.Sprintf("value-%d-%d", j, j*7919), ttl)
					case 1:
						p.HSet(ctx, k, "f1", j, "f2", "v-"+k, "f3", strings.Repeat("h", j%50))
					case 2:
						p.RPush(ctx, k, "a", j, k, "z")
					case 3:
						p.SAdd(ctx, k, "x", j, k, j+1, j+2)
					case 4:
						if j == 0 {
							p.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []any{"f", "v"}})
							continue
						}
						p.ZAdd(ctx, k, redis.Z{Score: float64(j) / 3, Member: "m-" + k}, redis.Z{Score: -1, Member: "n"})
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := client(t, addr, testPassword, 0).Set(ctx, "known", known, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return known
}

func newStore(t *testing.T) *backupstore.Local {
	t.Helper()
	st, err := backupstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sha256File(t *testing.T, p string) (string, []byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), b
}

func source(st *backupstore.Local, key string, k backupstore.Keyring, res DumpResult) Source {
	return Source{Store: st, Key: key, Keyring: k, KeyID: res.KeyID, Checksum: res.Checksum}
}

func sameDigests(t *testing.T, what string, ep redisctl.Endpoint, sample []redisctl.KeySample) {
	t.Helper()
	got, err := redisctl.DigestKeys(context.Background(), ep, sample)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(sample) {
		t.Fatalf("%s: sampled values differ:\n got %v\nwant %v", what, got, sample)
	}
}

// TestRealDumpDrillRestore: 50,000 keys dumped from the replica of a
// primary, drilled in a scratch container, loaded in a separate
// redis-server, restored into the flushed primary (and its replica), and
// refused once one byte of the stored object is flipped.
func TestRealDumpDrillRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	primary := startRedis(t, ipPrimary, "", "", true, noSaves)
	replica := startRedis(t, ipReplica, "", primary.addr, true, noSaves)
	known := populate(t, primary.addr)
	want, err := redisctl.ReadKeyspace(ctx, primary.ep())
	if err != nil || want.Total() != 50000 {
		t.Fatalf("primary keyspace %v, %v", want, err)
	}
	waitKeyspace(t, replica.ep(), want)

	st := newStore(t)
	keys := testKeyring(t, "2026-12")
	const key = "my-app-3030/my-app-3030-20261207.tar.gz.age"
	pBefore, err := redisctl.ReadSaveState(ctx, primary.ep())
	if err != nil {
		t.Fatal(err)
	}
	rBefore, err := redisctl.ReadSaveState(ctx, replica.ep())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Dump(ctx, DumpRequest{Addr: replica.addr, Password: testPassword, DataDir: replica.dir,
		Store: st, Key: key, Keyring: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dump: %d bytes, %d keys (after %d), %d sampled, files %v, save %s, whole dump %s, streamed at the rename %v",
		res.Size, res.Keys, res.KeysAfter, len(res.Sample), res.Files, res.SaveTook, res.Took, res.AtRename)

	// Taken on the replica: its last save moved, the primary's did not.
	pAfter, err := redisctl.ReadSaveState(ctx, primary.ep())
	if err != nil {
		t.Fatal(err)
	}
	rAfter, err := redisctl.ReadSaveState(ctx, replica.ep())
	if err != nil {
		t.Fatal(err)
	}
	if rAfter.Saves != rBefore.Saves+1 || !rAfter.LastSave.After(rBefore.LastSave) || !res.LastSave.Equal(rAfter.LastSave) {
		t.Fatalf("replica: saves %d -> %d, last save %v -> %v (dump says %v)", rBefore.Saves, rAfter.Saves, rBefore.LastSave, rAfter.LastSave, res.LastSave)
	}
	if pAfter.Saves != pBefore.Saves || !pAfter.LastSave.Equal(pBefore.LastSave) {
		t.Fatalf("the primary saved: %+v -> %+v", pBefore, pAfter)
	}
	if res.Keys != 50000 || res.KeysAfter != 50000 || len(res.Sample) < 28 || res.KeyID != "2026-12" || res.AOF {
		t.Fatalf("dump result %+v", res)
	}
	if strings.Join(res.Files, ",") != "dump.rdb" {
		t.Fatalf("files %v", res.Files)
	}
	obj := filepath.Join(st.Dir(), filepath.FromSlash(key))
	sum, raw := sha256File(t, obj)
	if sum != res.Checksum || int64(len(raw)) != res.Size {
		t.Fatalf("stored object: %d bytes, sha256 %s; dump says %d, %s", len(raw), sum, res.Size, res.Checksum)
	}
	// The member's own dump.rdb holds the value in clear (the check can
	// see it); the stored object does not.
	if rdb, err := os.ReadFile(filepath.Join(replica.dir, "dump.rdb")); err != nil || !bytes.Contains(rdb, []byte(known)) {
		t.Fatalf("dump.rdb does not hold the known value (%v): the grep below proves nothing", err)
	}
	if bytes.Contains(raw, []byte(known)) || bytes.Contains(raw, []byte("REDIS00")) {
		t.Fatal("the stored object holds plaintext")
	}

	// The restore drill, in a scratch container of the addon's engine.
	sc := redis7Scratch(t)
	work := t.TempDir()
	v, asum, err := DrillSum(ctx, DrillRequest{Source: source(st, key, keys, res), Dump: res, Scratch: sc, WorkDir: work})
	if err != nil || !v.OK {
		t.Fatalf("drill: %+v, %v", v, err)
	}
	if want := fmt.Sprintf("verified: 50000 keys, %d sampled keys match", len(res.Sample)); v.Detail != want {
		t.Fatalf("verdict %q; want %q", v.Detail, want)
	}
	t.Log(v.Detail)
	noScratchLeft(t)
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Fatalf("the drill left %v in its work dir", left)
	}

	// Downloaded, unpacked and loaded by a separate redis-server: the
	// same keys and values.
	dl := filepath.Join(t.TempDir(), "download.tar.gz")
	f, err := os.Create(dl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Fetch(ctx, st, key, keys, res.KeyID, res.Checksum, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The drill's sum of the plaintext archive is the download's.
	if dlSum, dlRaw := sha256File(t, dl); asum.SHA256 != dlSum || asum.Bytes != int64(len(dlRaw)) {
		t.Fatalf("drill's archive sum %+v; download: %d bytes, %s", asum, len(dlRaw), dlSum)
	}
	unpacked := t.TempDir()
	tgz, err := os.Open(dl)
	if err != nil {
		t.Fatal(err)
	}
	if err := Unpack(tgz, unpacked); err != nil {
		t.Fatal(err)
	}
	tgz.Close()
	check := startRedis(t, ipCheck, unpacked, "", false, noSaves)
	checkEP := redisctl.Endpoint{Addr: check.addr}
	waitKeyspace(t, checkEP, want)
	sameDigests(t, "separate redis-server", checkEP, res.Sample)
	wider, err := redisctl.SampleKeys(ctx, primary.ep(), 2000)
	if err != nil {
		t.Fatal(err)
	}
	sameDigests(t, "separate redis-server, 2000 more keys", checkEP, wider)
	if v, err := client(t, check.addr, "", 0).Get(ctx, "known").Result(); err != nil || v != known {
		t.Fatalf("known value %q, %v", v, err)
	}

	// Restore into the flushed primary: every key back, the replica too.
	if err := client(t, primary.addr, testPassword, 0).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitKeyspace(t, replica.ep(), redisctl.Keyspace{})
	stats, err := Restore(ctx, RestoreRequest{Source: source(st, key, keys, res), Scratch: sc, WorkDir: work,
		Addr: primary.addr, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Total != 50000 || stats.Skipped != 0 {
		t.Fatalf("restore copied %+v", stats)
	}
	waitKeyspace(t, primary.ep(), want)
	sameDigests(t, "restored primary", primary.ep(), wider)
	ttl, err := client(t, primary.addr, testPassword, 0).TTL(ctx, "k:0:10").Result()
	if err != nil || ttl < 90*time.Minute || ttl > 2*time.Hour {
		t.Fatalf("TTL after restore: %v, %v", ttl, err)
	}
	if ttl, err := client(t, primary.addr, testPassword, 0).TTL(ctx, "k:0:11").Result(); err != nil || ttl != -1 {
		t.Fatalf("a key without TTL: %v, %v", ttl, err)
	}
	waitKeyspace(t, replica.ep(), want)
	sameDigests(t, "replica of the restored primary", replica.ep(), wider)
	noScratchLeft(t)

	// One flipped byte: download, drill and restore refuse; the primary
	// is untouched.
	raw[len(raw)/2] ^= 0x20
	if err := os.WriteFile(obj, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var sink bytes.Buffer
	if _, err := Fetch(ctx, st, key, keys, res.KeyID, res.Checksum, &sink); !errors.Is(err, backupstore.ErrCorrupt) {
		t.Fatalf("fetch of a flipped object: %v", err)
	} else {
		t.Logf("fetch: %v", err)
	}
	v, asum, err = DrillSum(ctx, DrillRequest{Source: source(st, key, keys, res), Dump: res, Scratch: sc, WorkDir: work})
	if !errors.Is(err, backupstore.ErrCorrupt) || v.OK || !strings.HasPrefix(v.Detail, api.NotVerifiedPrefix+"backup "+key+" is corrupt") || asum != (ArchiveSum{}) {
		t.Fatalf("drill of a flipped object: %+v, %+v, %v", v, asum, err)
	}
	t.Log(v.Detail)
	if err := client(t, primary.addr, testPassword, 2).Set(ctx, "written-after", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	want[2]++
	_, err = Restore(ctx, RestoreRequest{Source: source(st, key, keys, res), Scratch: sc, WorkDir: work,
		Addr: primary.addr, Password: testPassword})
	if !errors.Is(err, backupstore.ErrCorrupt) || !strings.Contains(err.Error(), "is corrupt") {
		t.Fatalf("restore of a flipped object: %v", err)
	}
	t.Logf("restore: %v", err)
	waitKeyspace(t, primary.ep(), want)
	if n, err := client(t, primary.addr, testPassword, 2).Exists(ctx, "written-after").Result(); err != nil || n != 1 {
		t.Fatalf("the primary was touched: %d, %v", n, err)
	}
	noScratchLeft(t)
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Fatalf("left in the work dir: %v", left)
	}
}

// TestRealDumpAOF: a starter with AOF on, written to after its last
// rewrite: the dump holds the AOF files, the scratch loads them, the drill
// verifies.
func TestRealDumpAOF(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startRedis(t, ipPrimary, "", "", true, noSaves, "appendonly yes", `appenddirname "appendonlydir"`, "appendfsync always")
	known := populate(t, m.addr)
	want, err := redisctl.ReadKeyspace(ctx, m.ep())
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	keys := testKeyring(t, "k1")
	const key = "starter-1/starter-1-20261207.tar.gz.age"
	res, err := Dump(ctx, DumpRequest{Addr: m.addr, Password: testPassword, DataDir: m.dir, AOF: true,
		Store: st, Key: key, Keyring: keys, Sample: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dump: %d bytes, files %v", res.Size, res.Files)
	if !res.AOF || len(res.Files) < 4 || res.Files[len(res.Files)-1] != "appendonlydir/"+AOFManifestName || res.Keys != want.Total() {
		t.Fatalf("dump result %+v", res)
	}
	_, raw := sha256File(t, filepath.Join(st.Dir(), filepath.FromSlash(key)))
	if bytes.Contains(raw, []byte(known)) {
		t.Fatal("the stored object holds plaintext")
	}
	v, err := Drill(ctx, DrillRequest{Source: source(st, key, keys, res), Dump: res, Scratch: redis7Scratch(t), WorkDir: t.TempDir()})
	if err != nil || !v.OK {
		t.Fatalf("drill: %+v, %v", v, err)
	}
	t.Log(v.Detail)

	// Without AOF files yet (AOF requested, no manifest): dump.rdb alone.
	plain := startRedis(t, ipCheck, "", "", true, noSaves)
	if err := client(t, plain.addr, testPassword, 0).Set(ctx, "a", "b", 0).Err(); err != nil {
		t.Fatal(err)
	}
	res, err = Dump(ctx, DumpRequest{Addr: plain.addr, Password: testPassword, DataDir: plain.dir, AOF: true,
		Store: st, Key: "plain/x", Keyring: keys})
	if err != nil || res.AOF || strings.Join(res.Files, ",") != "dump.rdb" || res.Keys != 1 {
		t.Fatalf("dump without a manifest: %+v, %v", res, err)
	}
}

// TestRealDrillRefusesBadDumps: a dump the scratch cannot load, and one
// whose counts or values do not match the record, are not verified.
func TestRealDrillRefusesBadDumps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := newStore(t)
	keys := testKeyring(t, "k1")
	garbage := []byte("REDIS0010\xfa\x09redis-ver\x067.0.15 and then nothing that parses")
	size, sum, keyID, err := store(ctx, st, "bad/garbage", keys, []archiveFile{{name: "dump.rdb", r: bytes.NewReader(garbage), size: int64(len(garbage))}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := DumpResult{Size: size, Checksum: sum, KeyID: keyID, Keys: 1, KeysAfter: 1}
	work := t.TempDir()
	v, err := Drill(ctx, DrillRequest{Source: source(st, "bad/garbage", keys, res), Dump: res, Scratch: redis7Scratch(t), WorkDir: work})
	if !errors.Is(err, ErrScratchExited) || v.OK || !strings.HasPrefix(v.Detail, "not verified: the scratch redis exited") || strings.Contains(v.Detail, "\n") {
		t.Fatalf("drill of garbage: %+v, %v", v, err)
	}
	t.Logf("%s\n%v", v.Detail, err)
	noScratchLeft(t)

	// A real dump of 3 keys, checked against a record that says 4, then
	// against one whose sampled value differs.
	m := startRedis(t, ipPrimary, "", "", true, noSaves)
	for i := 0; i < 3; i++ {
		if err := client(t, m.addr, testPassword, 0).Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	res, err = Dump(ctx, DumpRequest{Addr: m.addr, Password: testPassword, DataDir: m.dir, Store: st, Key: "small/x", Keyring: keys})
	if err != nil || len(res.Sample) != 3 {
		t.Fatalf("dump: %+v, %v", res, err)
	}
	wrong := res
	wrong.Keys, wrong.KeysAfter = 4, 4
	v, err = Drill(ctx, DrillRequest{Source: source(st, "small/x", keys, res), Dump: wrong, Scratch: redis7Scratch(t), WorkDir: work})
	if err != nil || v.Detail != "not verified: 3 keys, expected 4" {
		t.Fatalf("count off: %+v, %v", v, err)
	}
	wrong = res
	wrong.Keys, wrong.KeysAfter = 2, 5
	wrong.Sample = append([]redisctl.KeySample(nil), res.Sample...)
	wrong.Sample[1].Digest = strings.Repeat("0", 64)
	v, err = Drill(ctx, DrillRequest{Source: source(st, "small/x", keys, res), Dump: wrong, Scratch: redis7Scratch(t), WorkDir: work})
	if err != nil || v.Detail != "not verified: 3 keys, but 1 of 3 sampled keys differ" {
		t.Fatalf("sample off: %+v, %v", v, err)
	}
	noScratchLeft(t)
}

// TestRealScratchValkey: a Redis 7 dump drilled in a Valkey 8.0.1 scratch
// (the engine an addon upgraded to): Valkey reads it, and takes the
// scratch's replica-of-nothing config.
func TestRealScratchValkey(t *testing.T) {
	images, err := imagesDir()
	if err != nil {
		t.Fatal(err)
	}
	ix, err := packaging.ReadIndex(images)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ix.Lookup(api.ImageValkey8); !ok {
		t.Fatalf("image %s is not in %s: build it with `make images`", api.ImageValkey8, images)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := startRedis(t, ipPrimary, "", "", true, noSaves)
	for i := 0; i < 100; i++ {
		if err := client(t, m.addr, testPassword, i%5).Set(ctx, fmt.Sprint("k", i), i, time.Duration(i%2)*time.Hour*3).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Keys whose TTL passes before the drill still count: the scratch is
	// a replica, as the member's count was.
	if err := client(t, m.addr, testPassword, 0).Set(ctx, "short", "x", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	keys := testKeyring(t, "k1")
	res, err := Dump(ctx, DumpRequest{Addr: m.addr, Password: testPassword, DataDir: m.dir, Store: st, Key: "v/x", Keyring: keys})
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != 101 {
		t.Fatalf("dump result %+v", res)
	}
	// Until the short key has expired on the member.
	waitKeyspace(t, m.ep(), redisctl.Keyspace{0: 20, 1: 20, 2: 20, 3: 20, 4: 20})
	v, err := Drill(ctx, DrillRequest{Source: source(st, "v/x", keys, res), Dump: res,
		Scratch: scratch(t, api.ImageValkey8, "/usr/bin/valkey-server"), WorkDir: t.TempDir()})
	if err != nil || !v.OK || !strings.HasPrefix(v.Detail, "verified: 101 keys") {
		t.Fatalf("valkey drill: %+v, %v", v, err)
	}
	t.Log(v.Detail)
	noScratchLeft(t)
}

// TestRealDumpMemoryFlat: a ~200 MB dataset dumped with the Go heap
// sampled throughout: its peak stays under a fixed bound, far below the
// dataset's size.
func TestRealDumpMemoryFlat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// hz 1: the server notices its save's end up to a second after the
	// rename, so the dump's stream starts at the rename (AtRename).
	m := startRedis(t, ipPrimary, "", "", true, noSaves, "hz 1")
	const keys, valueSize = 200000, 1024
	c := client(t, m.addr, testPassword, 0)
	for i := 0; i < keys; i += 1000 {
		val := make([]byte, valueSize*1000)
		if _, err := rand.Read(val); err != nil { // incompressible: the RDB is ~200 MB
			t.Fatal(err)
		}
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := 0; j < 1000; j++ {
				p.Set(ctx, fmt.Sprint("big:", i+j), val[j*valueSize:(j+1)*valueSize], 0)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	st := newStore(t)
	kr := testKeyring(t, "k1")

	goruntime.GC()
	var base goruntime.MemStats
	goruntime.ReadMemStats(&base)
	var (
		mu   sync.Mutex
		peak uint64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms goruntime.MemStats
			goruntime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	res, err := Dump(ctx, DumpRequest{Addr: m.addr, Password: testPassword, DataDir: m.dir, Store: st, Key: "big/x", Keyring: kr})
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(m.dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	const bound = 64 << 20
	t.Logf("dataset: RDB %d MiB, stored %d MiB; Go heap in use: %d MiB before, peak %d MiB during the dump (bound %d MiB); BGSAVE %s, whole dump %s (%.2fx)",
		fi.Size()>>20, res.Size>>20, base.HeapInuse>>20, peak>>20, bound>>20, res.SaveTook.Round(time.Millisecond), res.Took.Round(time.Millisecond),
		res.Took.Seconds()/res.SaveTook.Seconds())
	if fi.Size() < 190<<20 || res.Keys != keys {
		t.Fatalf("the dataset is %d bytes, %d keys: not the ~200 MB the test means", fi.Size(), res.Keys)
	}
	if peak > bound {
		t.Fatalf("Go heap peaked at %d MiB during a dump of %d MiB (bound %d MiB)", peak>>20, fi.Size()>>20, bound>>20)
	}
	if !res.AtRename {
		t.Fatal("the stream waited for the server to report the save done (hz 1: it starts at the rename)")
	}
}

// TestRealDumpEngines: the members of the catalog's other engines (Valkey
// 8.0 and 8.1, Redis 8, as containers of their images) saved and dumped:
// their dump.rdb is renamed in place as Redis 7's is, so the stream
// starts at the rename, and a scratch of the same engine loads the dump.
func TestRealDumpEngines(t *testing.T) {
	images, err := imagesDir()
	if err != nil {
		t.Fatal(err)
	}
	ix, err := packaging.ReadIndex(images)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct{ image, binary string }{
		{api.ImageValkey8, "/usr/bin/valkey-server"},
		{api.ImageValkey81, "/usr/bin/valkey-server"},
		{api.ImageRedis8, "/usr/bin/redis-server"},
	} {
		t.Run(e.image, func(t *testing.T) {
			if _, ok := ix.Lookup(e.image); !ok {
				t.Fatalf("image %s is not in %s: build it with `make images`", e.image, images)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// The member: a scratch server of the engine on an empty dir
			// (no password), made a primary; hz 1 as above.
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o777); err != nil { // the engine's user saves in it
				t.Fatal(err)
			}
			sc := scratch(t, e.image, e.binary)
			addr, stop, err := sc.Start(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := stop(context.Background()); err != nil {
					t.Error(err)
				}
			}()
			c := client(t, addr, "", 0)
			if err := c.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil { // a scratch is a replica of nothing
				t.Fatal(err)
			}
			if err := c.ConfigSet(ctx, "hz", "1").Err(); err != nil {
				t.Fatal(err)
			}
			val := make([]byte, 4096)
			const n = 10000 // ~40 MB
			for i := 0; i < n; i += 1000 {
				_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for j := i; j < i+1000; j++ {
						if _, err := rand.Read(val); err != nil {
							return err
						}
						p.Set(ctx, fmt.Sprint("k", j), val, 0)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			st := newStore(t)
			keys := testKeyring(t, "k1")
			res, err := Dump(ctx, DumpRequest{Addr: addr, DataDir: dir, Store: st, Key: "e/x", Keyring: keys})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: dump of %d keys, %d bytes; save %s, whole dump %s; streamed at the rename: %v",
				e.image, res.Keys, res.Size, res.SaveTook.Round(time.Millisecond), res.Took.Round(time.Millisecond), res.AtRename)
			if res.Keys != n || !res.AtRename {
				t.Fatalf("dump result: %d keys, at the rename %v", res.Keys, res.AtRename)
			}
			v, err := Drill(ctx, DrillRequest{Source: source(st, "e/x", keys, res), Dump: res,
				Scratch: scratch(t, e.image, e.binary), WorkDir: t.TempDir()})
			if err != nil || !v.OK {
				t.Fatalf("drill: %+v, %v", v, err)
			}
		})
	}
	noScratchLeft(t)
}
