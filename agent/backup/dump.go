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
// BGSAVE waited for, the files opened (see the package comment), the
// count and sample again, then the archive streamed through gzip, age and
// SHA-256 into Store.Put. On any error, or when ctx ends, nothing is left
// in the store. Errors never hold the password or a key.
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
	save, err := redisctl.BGSave(ctx, req.Addr, req.Password)
	if err != nil {
		return res, fmt.Errorf("dump %s: %w", req.Key, err)
	}
	files, aof, err := openFiles(req.DataDir, req.AOF)
	if err != nil {
		return res, fmt.Errorf("dump %s: %w", req.Key, err)
	}
	defer closeAll(files)
	after, err := redisctl.ReadKeyspace(ctx, ep)
	if err != nil {
		return res, fmt.Errorf("dump %s: %w", req.Key, err)
	}
	if len(sample) > 0 {
		again, err := redisctl.DigestKeys(ctx, ep, sample)
		if err != nil {
			return res, fmt.Errorf("dump %s: sample: %w", req.Key, err)
		}
		sample = redisctl.Unchanged(sample, again)
	}
	res = DumpResult{
		Keys: before.Total(), KeysAfter: after.Total(), Sample: sample,
		LastSave: save.LastSave(), AOF: aof, SaveTook: save.Took,
	}
	for _, f := range files {
		res.Files = append(res.Files, f.name)
	}
	size, sum, keyID, err := store(ctx, req.Store, req.Key, req.Keyring, files)
	if err != nil {
		return DumpResult{}, fmt.Errorf("dump %s into %s: %w", req.Key, req.Store, err)
	}
	res.Size, res.Checksum, res.KeyID, res.Took = size, sum, keyID, time.Since(start)
	return res, nil
}

// openFiles opens dump.rdb and, with aof, the AOF files (see the package
// comment); aofIncluded says whether they are in.
func openFiles(dataDir string, aof bool) (files []archiveFile, aofIncluded bool, err error) {
	rdb, err := openFile(filepath.Join(dataDir, render.RDBFileName), render.RDBFileName)
	if err != nil {
		return nil, false, err
	}
	files = []archiveFile{rdb}
	if !aof {
		return files, false, nil
	}
	more, err := openAOF(filepath.Join(dataDir, render.AOFDirName))
	if errors.Is(err, fs.ErrNotExist) && more == nil {
		return files, false, nil // no manifest yet: dump.rdb alone
	}
	if err != nil {
		closeAll(files)
		return nil, false, err
	}
	return append(files, more...), true, nil
}

func openFile(p, name string) (archiveFile, error) {
	f, err := os.Open(p)
	if err != nil {
		return archiveFile{}, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", p)
	}
	if err != nil {
		_ = f.Close()
		return archiveFile{}, err
	}
	return archiveFile{name: name, r: f, c: f, size: fi.Size(), mtime: fi.ModTime()}, nil
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

// store streams the archive of files into st under key, in three
// goroutines joined by pipes, so the stages overlap on two CPUs: tar and
// gzip; age; SHA-256 and Put (the caller's: the object is hashed as Put
// reads it).
func store(ctx context.Context, st backupstore.Store, key string, k backupstore.Keyring, files []archiveFile) (size int64, sum, keyID string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	plainR, plainW := io.Pipe()
	pr, pw := io.Pipe()
	written := &countWriter{w: pw}
	archived := make(chan error, 1)
	go func() {
		err := writeArchive(ctx, plainW, files)
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
	pr.CloseWithError(errStoreStopped) // unblocks the sealer if Put gave up early
	archErr, sealErr := <-archived, <-sealed
	if putErr != nil {
		// A failed stage closed its pipe with its error, which reached
		// Put: Put's error holds it.
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

// writeArchive writes the tar.gz of files to w.
func writeArchive(ctx context.Context, w io.Writer, files []archiveFile) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	buf := make([]byte, copyBufSize)
	for _, a := range files {
		hdr := &tar.Header{Name: a.name, Mode: 0o600, Size: a.size, ModTime: a.mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if strings.HasSuffix(a.name, "/") {
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o700, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("archive %s: %w", a.name, err)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		// Up to the size it had when opened; the struct hides
		// WriteTo/ReadFrom: one buffer, ctx checked between reads.
		n, err := io.CopyBuffer(struct{ io.Writer }{tw}, ctxReader{ctx, io.LimitReader(a.r, a.size)}, buf)
		if err != nil {
			return fmt.Errorf("archive %s: %w", a.name, err)
		}
		if n != a.size {
			return fmt.Errorf("archive %s: %d bytes read, %d expected (the file shrank)", a.name, n, a.size)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}
