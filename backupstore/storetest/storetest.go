// Package storetest is the conformance suite every backupstore.Store
// passes: round trips, overwrite, prefix listing, missing keys, atomic and
// clean interrupted Puts, objects larger than one S3 part, and bad keys.
// A store's own test calls Run with a constructor of empty stores.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/backupstore"
)

// Incompleter is implemented by stores that can list what interrupted Puts
// left behind (Local's temporary files, S3's incomplete multipart uploads).
// The suite requires it: "nothing is left behind" is part of the contract.
type Incompleter interface {
	Incomplete(ctx context.Context) ([]string, error)
}

// LargeSize is the size of the suite's large objects: more than two parts
// of S3's minimum part size (5 MiB), so a store configured with that part
// size uploads three parts.
const LargeSize = 12 << 20

// opTimeout bounds each store call of the suite.
const opTimeout = 2 * time.Minute

// Run runs the suite; newStore returns a new, empty store for each subtest.
func Run(t *testing.T, newStore func(t *testing.T) backupstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s backupstore.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Empty", testEmpty},
		{"Overwrite", testOverwrite},
		{"ListPrefix", testListPrefix},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"Large", testLarge},
		{"ReaderFails", testReaderFails},
		{"ContextCancelled", testContextCancelled},
		{"InvisibleUntilComplete", testInvisibleUntilComplete},
		{"Concurrent", testConcurrent},
		{"BadKeys", testBadKeys},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			if _, ok := s.(Incompleter); !ok {
				t.Fatalf("%T does not implement storetest.Incompleter", s)
			}
			tc.fn(t, s)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// data returns n deterministic pseudo-random bytes for seed.
func data(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seedBytes(seed)), n)
}

func seedBytes(seed uint64) (b [32]byte) {
	for i := range 8 {
		b[i] = byte(seed >> (8 * i))
	}
	return b
}

func sum(t *testing.T, r io.Reader) ([32]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return [32]byte(h.Sum(nil)), n
}

func put(t *testing.T, s backupstore.Store, key string, r io.Reader) int64 {
	t.Helper()
	n, err := s.Put(ctxT(t), key, r)
	if err != nil {
		t.Fatalf("Put %s: %v", key, err)
	}
	return n
}

// get reads the whole object.
func get(t *testing.T, s backupstore.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get %s: read: %v", key, err)
	}
	return b
}

// getSum streams the object into a hash.
func getSum(t *testing.T, s backupstore.Store, key string) ([32]byte, int64) {
	t.Helper()
	rc, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	defer rc.Close()
	return sum(t, rc)
}

func keys(t *testing.T, s backupstore.Store, prefix string) []string {
	t.Helper()
	objs, err := s.List(ctxT(t), prefix)
	if err != nil {
		t.Fatalf("List %q: %v", prefix, err)
	}
	out := []string{}
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func wantKeys(t *testing.T, s backupstore.Store, prefix string, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := keys(t, s, prefix); !slices.Equal(got, want) {
		t.Fatalf("List %q = %q, want %q", prefix, got, want)
	}
}

func wantMissing(t *testing.T, s backupstore.Store, key string) {
	t.Helper()
	if o, err := s.Stat(ctxT(t), key); !errors.Is(err, backupstore.ErrNotFound) {
		t.Fatalf("Stat %s = %+v, %v; want ErrNotFound", key, o, err)
	}
	rc, err := s.Get(ctxT(t), key)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, backupstore.ErrNotFound) {
		t.Fatalf("Get %s: %v; want ErrNotFound", key, err)
	}
}

func wantNoLeftovers(t *testing.T, s backupstore.Store) {
	t.Helper()
	left, err := s.(Incompleter).Incomplete(ctxT(t))
	if err != nil {
		t.Fatalf("Incomplete: %v", err)
	}
	if len(left) != 0 {
		t.Fatalf("an interrupted Put left %q behind", left)
	}
}

func testRoundTrip(t *testing.T, s backupstore.Store) {
	const key = "my-app-3030/my-app-3030-20261207.age"
	want, _ := io.ReadAll(data(1, 100<<10))
	before := time.Now().Add(-time.Minute)
	if n := put(t, s, key, bytes.NewReader(want)); n != int64(len(want)) {
		t.Fatalf("Put returned %d, want %d", n, len(want))
	}
	if got := get(t, s, key); !bytes.Equal(got, want) {
		t.Fatalf("Get returned %d bytes, not the %d put", len(got), len(want))
	}
	o, err := s.Stat(ctxT(t), key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if o.Key != key || o.Size != int64(len(want)) {
		t.Fatalf("Stat = %+v, want key %s size %d", o, key, len(want))
	}
	if o.ModTime.Before(before) || o.ModTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Stat ModTime %s is not about now", o.ModTime)
	}
	objs, err := s.List(ctxT(t), "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	// Stat and List may differ in precision (S3: HTTP date vs XML).
	if len(objs) != 1 || objs[0].Key != key || objs[0].Size != o.Size || objs[0].ModTime.Sub(o.ModTime).Abs() > time.Second {
		t.Fatalf("List = %+v, want one object like %+v", objs, o)
	}
	if got := s.String(); got == "" {
		t.Fatal("String() is empty")
	}
}

func testEmpty(t *testing.T, s backupstore.Store) {
	if n := put(t, s, "e/empty", strings.NewReader("")); n != 0 {
		t.Fatalf("Put returned %d, want 0", n)
	}
	if got := get(t, s, "e/empty"); len(got) != 0 {
		t.Fatalf("Get returned %d bytes, want 0", len(got))
	}
	if o, err := s.Stat(ctxT(t), "e/empty"); err != nil || o.Size != 0 {
		t.Fatalf("Stat = %+v, %v; want size 0", o, err)
	}
	wantKeys(t, s, "", "e/empty")
}

func testOverwrite(t *testing.T, s backupstore.Store) {
	const key = "a/b.age"
	put(t, s, key, strings.NewReader("first version, the longer one"))
	put(t, s, key, strings.NewReader("second"))
	if got := string(get(t, s, key)); got != "second" {
		t.Fatalf("Get = %q, want the second version", got)
	}
	if o, err := s.Stat(ctxT(t), key); err != nil || o.Size != int64(len("second")) {
		t.Fatalf("Stat = %+v, %v; want size %d", o, err, len("second"))
	}
	wantKeys(t, s, "", key)
}

func testListPrefix(t *testing.T, s backupstore.Store) {
	all := []string{"app-1/x-1.age", "app-1/x-2.age", "app-10/x.age", "app-1_b/y.age", "app-2/deep/z.age", "top.age"}
	for i, k := range slices.Backward(all) { // not in key order
		put(t, s, k, strings.NewReader(fmt.Sprintf("object %d", i)))
	}
	sorted := slices.Clone(all)
	slices.Sort(sorted)
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"app-1/", []string{"app-1/x-1.age", "app-1/x-2.age"}},
		{"app-1", []string{"app-1/x-1.age", "app-1/x-2.age", "app-10/x.age", "app-1_b/y.age"}},
		{"app-1/x-2", []string{"app-1/x-2.age"}},
		{"app-2/", []string{"app-2/deep/z.age"}},
		{"app-2/deep/z.age", []string{"app-2/deep/z.age"}},
		{"app-2/de", []string{"app-2/deep/z.age"}},
		{"t", []string{"top.age"}},
		{"none/", nil},
		{"app-3", nil},
		{"../", nil},
	} {
		wantKeys(t, s, tc.prefix, tc.want...)
	}
	objs, err := s.List(ctxT(t), "app-1/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, o := range objs {
		if o.Size != int64(len("object 0")) || o.ModTime.IsZero() {
			t.Fatalf("List entry %+v: want size %d and a time", o, len("object 0"))
		}
	}
}

func testMissing(t *testing.T, s backupstore.Store) {
	wantMissing(t, s, "nothing/here.age")
	put(t, s, "dir/obj", strings.NewReader("x"))
	wantMissing(t, s, "dir") // a prefix of an object is no object
	wantMissing(t, s, "dir/ob")
	wantMissing(t, s, "dir/obj/below")
	if err := s.Delete(ctxT(t), "nothing/here.age"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctxT(t), "dir"); err != nil {
		t.Fatalf("Delete of a prefix: %v", err)
	}
	wantKeys(t, s, "", "dir/obj")
}

func testDelete(t *testing.T, s backupstore.Store) {
	put(t, s, "d/one", strings.NewReader("1"))
	put(t, s, "d/two", strings.NewReader("2"))
	if err := s.Delete(ctxT(t), "d/one"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "d/one")
	wantKeys(t, s, "", "d/two")
	if err := s.Delete(ctxT(t), "d/one"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if err := s.Delete(ctxT(t), "d/two"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantKeys(t, s, "")
	put(t, s, "d/one", strings.NewReader("again")) // a key can come back
	if got := string(get(t, s, "d/one")); got != "again" {
		t.Fatalf("Get = %q", got)
	}
}

func testLarge(t *testing.T, s backupstore.Store) {
	const key = "big/large.age"
	want, _ := sum(t, data(2, LargeSize))
	// An odd-sized reader: reads never line up with parts or buffers.
	if n := put(t, s, key, oddReader{data(2, LargeSize)}); n != LargeSize {
		t.Fatalf("Put returned %d, want %d", n, LargeSize)
	}
	got, n := getSum(t, s, key)
	if n != LargeSize || got != want {
		t.Fatalf("Get returned %d bytes (sha256 %x), want %d (sha256 %x)", n, got, LargeSize, want)
	}
	if o, err := s.Stat(ctxT(t), key); err != nil || o.Size != LargeSize {
		t.Fatalf("Stat = %+v, %v; want size %d", o, err, LargeSize)
	}
	wantNoLeftovers(t, s)
}

// oddReader returns at most 12345 bytes a read.
type oddReader struct{ r io.Reader }

func (o oddReader) Read(p []byte) (int, error) {
	return o.r.Read(p[:min(len(p), 12345)])
}

var errBoom = errors.New("storetest: the source failed")

// failingReader returns data, then errBoom after n bytes.
type failingReader struct {
	r io.Reader
	n int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errBoom
	}
	n, err := f.r.Read(p[:min(int64(len(p)), f.n)])
	f.n -= int64(n)
	return n, err
}

func testReaderFails(t *testing.T, s backupstore.Store) {
	// Past one 5 MiB part, so an S3 store has uploaded a part by then.
	const failAt = 7 << 20
	for _, size := range []int64{0, 1000, failAt} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			const old, fresh = "f/old.age", "f/new.age"
			put(t, s, old, strings.NewReader("the previous backup"))
			_, err := s.Put(ctxT(t), old, &failingReader{r: data(3, LargeSize), n: size})
			if !errors.Is(err, errBoom) {
				t.Fatalf("Put over an object with a failing reader: %v, want an error wrapping %v", err, errBoom)
			}
			if got := string(get(t, s, old)); got != "the previous backup" {
				t.Fatalf("a failed Put replaced the object: Get = %d bytes", len(got))
			}
			_, err = s.Put(ctxT(t), fresh, &failingReader{r: data(3, LargeSize), n: size})
			if !errors.Is(err, errBoom) {
				t.Fatalf("Put with a failing reader: %v, want an error wrapping %v", err, errBoom)
			}
			wantMissing(t, s, fresh)
			wantKeys(t, s, "", old)
			wantNoLeftovers(t, s)
		})
	}
}

// cancelReader cancels its context after n bytes and goes on returning data.
type cancelReader struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func testContextCancelled(t *testing.T, s backupstore.Store) {
	for _, at := range []int64{0, 7 << 20} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			const key = "c/cancelled.age"
			put(t, s, "c/other.age", strings.NewReader("stays"))
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			if at == 0 {
				cancel()
			}
			_, err := s.Put(ctx, key, &cancelReader{r: data(4, LargeSize), n: at, cancel: cancel})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Put under a cancelled ctx: %v, want an error wrapping context.Canceled", err)
			}
			wantMissing(t, s, key)
			wantKeys(t, s, "c/", "c/other.age")
			wantNoLeftovers(t, s)
		})
	}
}

// gateReader returns n bytes, then closes reached and blocks until release
// is closed, then returns the rest.
type gateReader struct {
	r       io.Reader
	n       int64
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		g.once.Do(func() { close(g.reached) })
		<-g.release
		return g.r.Read(p)
	}
	n, err := g.r.Read(p[:min(int64(len(p)), g.n)])
	g.n -= int64(n)
	return n, err
}

func testInvisibleUntilComplete(t *testing.T, s backupstore.Store) {
	const key = "g/growing.age"
	want, _ := sum(t, data(5, LargeSize))
	g := &gateReader{r: data(5, LargeSize), n: 6 << 20, reached: make(chan struct{}), release: make(chan struct{})}
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.Put(ctxT(t), key, g)
		done <- result{n, err}
	}()
	released := false
	defer func() {
		if !released {
			close(g.release)
			<-done
		}
	}()
	select {
	case <-g.reached:
	case r := <-done:
		t.Fatalf("Put returned before reading its source: %d, %v", r.n, r.err)
	case <-time.After(opTimeout):
		t.Fatal("Put did not read 6 MiB of its source")
	}
	// 6 MiB read, more to come: nothing may be visible, but the store
	// knows of the Put under way (so the suite's checks for leftovers can
	// see one).
	wantMissing(t, s, key)
	wantKeys(t, s, "")
	if left, err := s.(Incompleter).Incomplete(ctxT(t)); err != nil || len(left) != 1 {
		t.Fatalf("Incomplete during a Put = %q, %v; want the one Put under way", left, err)
	}
	close(g.release)
	released = true
	r := <-done
	if r.err != nil || r.n != LargeSize {
		t.Fatalf("Put = %d, %v; want %d", r.n, r.err, LargeSize)
	}
	if got, n := getSum(t, s, key); got != want || n != LargeSize {
		t.Fatalf("Get returned %d bytes, not what was put", n)
	}
	wantKeys(t, s, "", key)
}

func testConcurrent(t *testing.T, s backupstore.Store) {
	const workers = 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Go(func() {
			key := fmt.Sprintf("same-dir/obj-%d", i)
			b, _ := io.ReadAll(data(uint64(10+i), 256<<10))
			if _, err := s.Put(ctxT(t), key, bytes.NewReader(b)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Put: %v", err)
	}
	for i := range workers {
		key := fmt.Sprintf("same-dir/obj-%d", i)
		want, _ := io.ReadAll(data(uint64(10+i), 256<<10))
		if got := get(t, s, key); !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes, not what was put", key, len(got))
		}
	}
	if got := keys(t, s, "same-dir/"); len(got) != workers {
		t.Fatalf("List = %q, want %d objects", got, workers)
	}
}

// BadKeys are keys every store must refuse.
var BadKeys = []string{
	"",
	"/abs.age",
	"/etc/passwd",
	"a//b",
	"a/",
	"../escape.age",
	"a/../../escape.age",
	"..",
	".",
	"./a",
	"a/./b",
	".hidden",
	"a/.put-123",
	`a\b`,
	"a b",
	"a\x00b",
	"a\nb",
	"ключ",
	"a?b",
	strings.Repeat("a", 256),
	strings.Repeat("abcdefgh/", 114) + "abc",
}

func testBadKeys(t *testing.T, s backupstore.Store) {
	for _, key := range BadKeys {
		if _, err := s.Put(ctxT(t), key, strings.NewReader("must not be written")); err == nil {
			t.Errorf("Put %q: no error", key)
		}
		if _, err := s.Stat(ctxT(t), key); err == nil || errors.Is(err, backupstore.ErrNotFound) {
			t.Errorf("Stat %q: %v, want a bad-key error", key, err)
		}
		if rc, err := s.Get(ctxT(t), key); err == nil || errors.Is(err, backupstore.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Get %q: %v, want a bad-key error", key, err)
		}
		if err := s.Delete(ctxT(t), key); err == nil {
			t.Errorf("Delete %q: no error", key)
		}
	}
	wantKeys(t, s, "")
	wantNoLeftovers(t, s)
}
