package backup

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Dump figures.
const (
	// DefaultSample is how many keys a dump samples when the request says 0.
	DefaultSample = 32
	// copyBufSize is the one buffer a dump streams each file through.
	copyBufSize = 256 << 10
	// sealBufSize is how much sealed output is handed to Put at once.
	sealBufSize = 1 << 20
	// manifestMax bounds the AOF manifest read into memory (a few lines).
	manifestMax = 1 << 20
	// aofAttempts bounds the tries at a consistent set of AOF files.
	aofAttempts = 5
)

// AOFManifestName is the AOF manifest's name in appendonlydir/.
const AOFManifestName = render.AOFFileName + ".manifest"

// DumpRequest is one dump of one member.
type DumpRequest struct {
	// Addr and Password reach the member (the replica of a business
	// addon, the only node of a starter).
	Addr, Password string
	// DataDir is the member's dir on this host: dump.rdb and, with AOF
	// on, appendonlydir/.
	DataDir string
	// AOF: the member runs with appendonly yes; its AOF files go into the
	// dump too.
	AOF bool
	// Store, Key: where the sealed archive goes.
	Store backupstore.Store
	Key   string
	// Keyring seals it with its current key.
	Keyring backupstore.Keyring
	// Sample is how many keys to sample for the drill: 0 means
	// DefaultSample, < 0 none.
	Sample int
}

// DumpResult is what a dump stored and saw.
type DumpResult struct {
	// Size and Checksum (SHA-256, hex) of the stored object, as stored;
	// KeyID names the key it was sealed with.
	Size     int64
	Checksum string
	KeyID    string
	// Keys is the member's key count (every database) just before the
	// BGSAVE, KeysAfter once the dumped files were opened: the dump holds
	// a count between the two (the same when nobody wrote meanwhile).
	// Both count keys whose TTL passed but that the member holds still;
	// so does a scratch server loading the dump (see RuntimeScratch).
	Keys, KeysAfter int64
	// Sample are keys whose values did not change between the two
	// counts, with a digest of each (redisctl.KeySample): the drill
	// checks them.
	Sample []redisctl.KeySample
	// LastSave is when the member's BGSAVE ended (rdb_last_save_time).
	LastSave time.Time
	// AOF: the archive holds the AOF files (else dump.rdb alone).
	AOF bool
	// Files are the archive's entries, in order.
	Files []string
	// SaveTook is how long the BGSAVE took; Took the whole dump.
	SaveTook, Took time.Duration
	// AtRename: the stream started as the new dump.rdb was renamed in
	// place, before the server reported the save done (else after).
	AtRename bool
}

// KeyRange is the key count range a restored dump must fall in.
func (r DumpResult) KeyRange() (lo, hi int64) {
	return min(r.Keys, r.KeysAfter), max(r.Keys, r.KeysAfter)
}

// archiveFile is one file of a dump, open, with the size it is streamed
// up to.
type archiveFile struct {
	name  string // in the archive, slash-separated; a directory ends with /
	r     io.Reader
	c     io.Closer // nil when there is nothing to close
	size  int64
	mtime time.Time
}

func closeAll(files []archiveFile) {
	for _, a := range files {
		if a.c != nil {
			_ = a.c.Close()
		}
	}
}

// Dump dumps the member of req into the store: key count and sample, a
// BGSAVE, the files opened (see the package comment), the count and
// sample again, and the archive streamed through gzip, age and SHA-256
// into Store.Put. The stream starts as soon as the new dump.rdb is renamed
// in place (see rdbWatch), before the server reports the save done (up to
// its serverCron tick and our poll later); the archive ends only once the
// server reported it done and ok. On any error, or when ctx ends, nothing
// is left in the store. Errors never hold the password or a key.
func Dump(ctx context.Context, req DumpRequest) (DumpResult, error) {
	start := time.Now()
	var res DumpResult
	if req.Store == nil || req.Key == "" || req.DataDir == "" || req.Addr == "" {
		return res, errors.New("dump: request needs a store, a key, the member's address and its data dir")
	}
	if err := req.Keyring.Validate(); err != nil {
		return res, fmt.Errorf("dump %s: %w", req.Key, err)
	}
	ep := redisctl.Endpoint{Addr: req.Addr, Password: req.Password}
	n := req.Sample
	if n == 0 {
		n = DefaultSample
	}
	before, err := redisctl.ReadKeyspace(ctx, ep)
	if err != nil {
		return res, fmt.Errorf("dump %s: %w", req.Key, err)
	}
	var sample []redisctl.KeySample
	if n > 0 {
		if sample, err = redisctl.SampleKeys(ctx, ep, n); err != nil {
			return res, fmt.Errorf("dump %s: sample: %w", req.Key, err)
		}
	}
	sctx, stopSave := context.WithCancel(ctx)
	defer stopSave()
	w := newRDBWatch(filepath.Join(req.DataDir, render.RDBFileName))
	saved := make(chan savedResult, 1)
	go func() {
		info, err := redisctl.BGSaveNotify(sctx, req.Addr, req.Password, w.start)
		saved <- savedResult{info, err}
	}()
	var rdb archiveFile
	var early bool
	var sv savedResult
	select {
	case rdb = <-w.found:
		early = true
	case sv = <-saved:
	}
	w.stop() // closes a file found too late
	if !early {
		if sv.err != nil {
			return res, fmt.Errorf("dump %s: %w", req.Key, sv.err)
		}
		if rdb, err = openFile(filepath.Join(req.DataDir, render.RDBFileName), render.RDBFileName); err != nil {
			return res, fmt.Errorf("dump %s: %w", req.Key, err)
		}
	}
	defer closeAll([]archiveFile{rdb})
	// The rest (the save's outcome, the AOF files, the count and sample
	// again) in a goroutine: with the stream started early it overlaps
	// it, and the archive waits for it before its end (rest).
	restc := make(chan restResult, 1)
	go func() {
		r := restResult{savedResult: sv}
		if early {
			r.savedResult = <-saved
		}
		if r.err == nil && req.AOF {
			r.files, r.aof, r.err = openAOFFiles(req.DataDir)
		}
		if r.err == nil {
			r.after, r.again, r.err = readAfter(sctx, ep, sample)
		}
		restc <- r
	}()
	// The archiver takes rest when it gets there, or Dump once store
	// returned (store returns after its archiver): one of them.
	var r restResult
	joined := false
	more := func(ctx context.Context) ([]archiveFile, error) {
		select {
		case r = <-restc:
			joined = true
			return r.files, r.err
		case <-ctx.Done(): // the store failed
			return nil, ctx.Err()
		}
	}
	size, sum, keyID, err := store(ctx, req.Store, req.Key, req.Keyring, []archiveFile{rdb}, more)
	if err != nil {
		stopSave()
	}
	if !joined {
		r = <-restc
	}
	defer closeAll(r.files)
	if err != nil { // holds rest's error when it failed the archive
		return DumpResult{}, fmt.Errorf("dump %s into %s: %w", req.Key, req.Store, err)
	}
	if r.err != nil { // never: the archive waited for rest
		_ = req.Store.Delete(context.WithoutCancel(ctx), req.Key)
		return DumpResult{}, fmt.Errorf("dump %s: %w", req.Key, r.err)
	}
	res = DumpResult{
		Keys: before.Total(), KeysAfter: r.after.Total(), Sample: redisctl.Unchanged(sample, r.again),
		LastSave: r.info.LastSave(), AOF: r.aof, SaveTook: r.info.Took, AtRename: early,
		Files: []string{rdb.name},
	}
	if len(sample) == 0 {
		res.Sample = nil
	}
	for _, f := range r.files {
		res.Files = append(res.Files, f.name)
	}
	res.Size, res.Checksum, res.KeyID, res.Took = size, sum, keyID, time.Since(start)
	return res, nil
}

// savedResult is what BGSaveNotify returned.
type savedResult struct {
	info redisctl.SaveInfo
	err  error
}

// restResult is what a dump learns once the save is done: its outcome,
// the AOF files (open), the key count and the sample's digests again.
type restResult struct {
	savedResult
	files []archiveFile
	aof   bool
	after redisctl.Keyspace
	again []redisctl.KeySample
}

// readAfter reads the key count and the sample's digests again.
func readAfter(ctx context.Context, ep redisctl.Endpoint, sample []redisctl.KeySample) (redisctl.Keyspace, []redisctl.KeySample, error) {
	after, err := redisctl.ReadKeyspace(ctx, ep)
	if err != nil {
		return nil, nil, err
	}
	if len(sample) == 0 {
		return after, nil, nil
	}
	again, err := redisctl.DigestKeys(ctx, ep, sample)
	if err != nil {
		return nil, nil, fmt.Errorf("sample: %w", err)
	}
	return after, again, nil
}

// rdbWatchPoll is how often a dump looks for the new dump.rdb.
const rdbWatchPoll = 5 * time.Millisecond

// rdbWatch finds the dump.rdb our BGSAVE renames in place. The server
// writes a save to temp-<child pid>.rdb, fsyncs and closes it, then
// renames it to dump.rdb (redis 7 and 8, valkey 8 alike): once the path
// names another file than when the server accepted our BGSAVE, that file
// is a whole snapshot forked after it (redisctl.BGSaveNotify), ready to
// stream while the server has yet to notice its child ended. Opening
// dump.rdb rather than following the temp file as it grows: the archive's
// tar header holds the file's size, which is known only at the end.
type rdbWatch struct {
	path  string
	found chan archiveFile // the new dump.rdb, open; at most one
	quit  chan struct{}
	wg    sync.WaitGroup
}

func newRDBWatch(p string) *rdbWatch {
	return &rdbWatch{path: p, found: make(chan archiveFile, 1), quit: make(chan struct{})}
}

// start notes the file the path names now and polls it until it names
// another (BGSaveNotify's accepted: called at most once, before stop).
func (w *rdbWatch) start() {
	prev, err := os.Stat(w.path)
	if err != nil {
		prev = nil // none yet: any file is new
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(rdbWatchPoll)
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
			fi, err := os.Stat(w.path)
			if err != nil || (prev != nil && os.SameFile(prev, fi)) {
				continue
			}
			a, afi, err := openFileInfo(w.path, render.RDBFileName)
			if err != nil {
				continue
			}
			if prev != nil && os.SameFile(prev, afi) { // renamed back in between: never, but look again
				_ = a.c.Close()
				continue
			}
			w.found <- a
			return
		}
	}()
}

// stop ends the polling and closes a file found but not taken.
func (w *rdbWatch) stop() {
	close(w.quit)
	w.wg.Wait()
	select {
	case a := <-w.found:
		_ = a.c.Close()
	default:
	}
}

// openAOFFiles opens the AOF files of dataDir: none, and not included,
// when there is no manifest yet.
func openAOFFiles(dataDir string) (files []archiveFile, included bool, err error) {
	more, err := openAOF(filepath.Join(dataDir, render.AOFDirName))
	if errors.Is(err, fs.ErrNotExist) && more == nil {
		return nil, false, nil // no manifest yet: dump.rdb alone
	}
	if err != nil {
		return nil, false, err
	}
	return more, true, nil
}

func openFile(p, name string) (archiveFile, error) {
	a, _, err := openFileInfo(p, name)
	return a, err
}

// openFileInfo opens the regular file p as name, with its FileInfo.
func openFileInfo(p, name string) (archiveFile, os.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return archiveFile{}, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", p)
	}
	if err != nil {
		_ = f.Close()
		return archiveFile{}, nil, err
	}
	return archiveFile{name: name, r: f, c: f, size: fi.Size(), mtime: fi.ModTime()}, fi, nil
}

// errManifestMissing is returned (wrapping fs.ErrNotExist) with no files
// when the AOF dir has no manifest.
var errManifestMissing = fmt.Errorf("no AOF manifest: %w", fs.ErrNotExist)

// openAOF opens a consistent set of the AOF files of dir: the manifest,
// then every file it names, then the manifest again, which must not have
// changed.
func openAOF(dir string) ([]archiveFile, error) {
	mpath := filepath.Join(dir, AOFManifestName)
	for attempt := 1; ; attempt++ {
		m, mtime, err := readManifest(mpath)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errManifestMissing
		}
		if err != nil {
			return nil, err
		}
		names, err := ParseManifest(m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", mpath, err)
		}
		files := []archiveFile{{name: render.AOFDirName + "/", mtime: mtime}}
		var openErr error
		for _, n := range names {
			a, err := openFile(filepath.Join(dir, n), render.AOFDirName+"/"+n)
			if err != nil {
				openErr = err
				break
			}
			files = append(files, a)
		}
		var again []byte
		if openErr == nil {
			again, _, openErr = readManifest(mpath)
		}
		if openErr == nil && bytes.Equal(m, again) {
			// The manifest last, as read: it names exactly these files.
			return append(files, archiveFile{name: render.AOFDirName + "/" + AOFManifestName, r: bytes.NewReader(m), size: int64(len(m)), mtime: mtime}), nil
		}
		closeAll(files)
		if attempt == aofAttempts {
			if openErr == nil {
				openErr = errors.New("the manifest kept changing (AOF rewrites)")
			}
			return nil, fmt.Errorf("AOF files of %s: %w", dir, openErr)
		}
	}
}

func readManifest(p string) ([]byte, time.Time, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, manifestMax+1))
	if err != nil {
		return nil, time.Time{}, err
	}
	if len(b) > manifestMax {
		return nil, time.Time{}, fmt.Errorf("%s is over %d bytes", p, manifestMax)
	}
	return b, fi.ModTime(), nil
}

// ParseManifest returns the files an AOF manifest names as to load: the
// base and the incremental ones ("type b", "type i"), in order; history
// files ("type h") are left out (pure). A name must be a plain file name.
func ParseManifest(m []byte) ([]string, error) {
	var out []string
	for i, line := range strings.Split(string(m), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		kv := map[string]string{}
		for j := 0; j+1 < len(f); j += 2 {
			kv[f[j]] = f[j+1]
		}
		name := kv["file"]
		if q, err := strconv.Unquote(name); err == nil {
			name = q
		}
		if name == "" || name != path.Base(name) || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
			return nil, fmt.Errorf("manifest line %d: file name %q", i+1, kv["file"])
		}
		switch kv["type"] {
		case "b", "i":
			out = append(out, name)
		case "h":
		default:
			return nil, fmt.Errorf("manifest line %d: type %q", i+1, kv["type"])
		}
	}
	if len(out) == 0 {
		return nil, errors.New("manifest names no file")
	}
	return out, nil
}

// errStoreStopped ends the archive's writer when Put returned first.
var errStoreStopped = errors.New("the store stopped reading")

// hashCounter counts and hashes what goes through it.
type hashCounter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// ctxReader fails with ctx's error once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// hashReader counts and hashes what is read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (c *hashReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// countWriter counts what is written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// store streams the archive of files, then of those more returns (when
// not nil: called once the files are written, it may block until its ctx
// ends; an error fails the store) into st under key, in three
// goroutines joined by pipes, so the stages overlap on two CPUs: tar and
// gzip; age; SHA-256 and Put (the caller's: the object is hashed as Put
// reads it).
func store(ctx context.Context, st backupstore.Store, key string, k backupstore.Keyring, files []archiveFile, more func(context.Context) ([]archiveFile, error)) (size int64, sum, keyID string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	plainR, plainW := io.Pipe()
	pr, pw := io.Pipe()
	written := &countWriter{w: pw}
	archived := make(chan error, 1)
	go func() {
		err := writeArchive(ctx, plainW, files, more)
		if err != nil {
			cancel() // Put must not complete
		}
		plainW.CloseWithError(err) // nil: the sealer reads io.EOF
		archived <- err
	}()
	sealed := make(chan error, 1)
	go func() {
		err := func() error {
			// age writes 64 KiB chunks: handed to Put sealBufSize at a
			// time, fewer pipe hand-offs and writes.
			bw := bufio.NewWriterSize(written, sealBufSize)
			// Seal writes age's header at once: in bw.
			w, id, err := backupstore.Seal(bw, k)
			if err != nil {
				return err
			}
			keyID = id
			if _, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{plainR}, make([]byte, copyBufSize)); err != nil {
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
			return bw.Flush()
		}()
		if err != nil {
			cancel()
		}
		plainR.CloseWithError(errStoreStopped) // unblocks the archiver if we stopped first
		pw.CloseWithError(err)                 // nil: Put reads io.EOF
		sealed <- err
	}()
	hr := &hashReader{r: pr, h: sha256.New()}
	n, putErr := st.Put(ctx, key, hr)
	if putErr != nil {
		cancel() // unblocks the archiver waiting in more
	}
	pr.CloseWithError(errStoreStopped) // unblocks the sealer if Put gave up early
	archErr, sealErr := <-archived, <-sealed
	if putErr != nil {
		// A failed stage cancels ctx and closes its pipe with its error:
		// Put may stop on either. The stage's error says why, unless it
		// only saw the store stop or ctx end.
		for _, e := range []error{archErr, sealErr} {
			if e != nil && !errors.Is(e, errStoreStopped) && !errors.Is(e, context.Canceled) {
				return 0, "", "", fmt.Errorf("%w (%v)", e, putErr)
			}
		}
		return 0, "", "", putErr
	}
	if err := errors.Join(archErr, sealErr); err != nil { // Put completed on a failed stream: never, but never keep it
		_ = st.Delete(context.WithoutCancel(ctx), key)
		return 0, "", "", err
	}
	if n != written.n || hr.n != written.n {
		_ = st.Delete(context.WithoutCancel(ctx), key)
		return 0, "", "", fmt.Errorf("the store took %d bytes (read %d), %d were written", n, hr.n, written.n)
	}
	return written.n, hex.EncodeToString(hr.h.Sum(nil)), keyID, nil
}

// writeArchive writes the tar.gz of files, then of those more returns, to
// w.
func writeArchive(ctx context.Context, w io.Writer, files []archiveFile, more func(context.Context) ([]archiveFile, error)) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	buf := make([]byte, copyBufSize)
	for {
		for _, a := range files {
			if err := writeEntry(ctx, tw, a, buf); err != nil {
				return err
			}
		}
		if more == nil {
			break
		}
		if files, err = more(ctx); err != nil {
			return err
		}
		more = nil
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// writeEntry writes a's header and, for a file, its content up to the
// size it had when opened.
func writeEntry(ctx context.Context, tw *tar.Writer, a archiveFile, buf []byte) error {
	hdr := &tar.Header{Name: a.name, Mode: 0o600, Size: a.size, ModTime: a.mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if strings.HasSuffix(a.name, "/") {
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o700, 0
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive %s: %w", a.name, err)
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil
	}
	// The struct hides WriteTo/ReadFrom: one buffer, ctx checked between
	// reads.
	n, err := io.CopyBuffer(struct{ io.Writer }{tw}, ctxReader{ctx, io.LimitReader(a.r, a.size)}, buf)
	if err != nil {
		return fmt.Errorf("archive %s: %w", a.name, err)
	}
	if n != a.size {
		return fmt.Errorf("archive %s: %d bytes read, %d expected (the file shrank)", a.name, n, a.size)
	}
	return nil
}
