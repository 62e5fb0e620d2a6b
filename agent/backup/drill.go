package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Source is a stored dump and what it takes to read it back.
type Source struct {
	Store backupstore.Store
	Key   string
	// Keyring holds KeyID, the key the dump was sealed with; Checksum is
	// the SHA-256 recorded at dump time.
	Keyring         backupstore.Keyring
	KeyID, Checksum string
}

// DrillRequest is one restore drill of a dump.
type DrillRequest struct {
	Source
	// Dump is what the dump recorded: key counts and sample.
	Dump DumpResult
	// Scratch serves the dump; WorkDir is where the drill's directory is
	// made (the dump is unpacked there: it needs room for it; "" means
	// the system's temporary directory).
	Scratch Scratch
	WorkDir string
}

// Verdict is a drill's outcome: OK, and Detail ("verified: …" or
// "not verified: why"), as the backup's record shows it.
type Verdict struct {
	OK     bool
	Detail string
}

func notVerified(format string, args ...any) Verdict {
	return Verdict{Detail: api.NotVerifiedPrefix + fmt.Sprintf(format, args...)}
}

// Drill proves a stored dump restores: Fetch (checksum, decryption) into
// a fresh directory of WorkDir, Unpack, a scratch server loading it, its
// key count compared with the dump's (exact when the count did not move
// during the dump, else within the two counts) and each sampled key's
// value digest, then the scratch stopped and the directory removed.
//
// A verdict with OK false says what is wrong with the dump. An error
// means the drill did not finish; when the dump itself is at fault
// (corrupt: the error wraps backupstore.ErrCorrupt; or a scratch that
// died loading it: ErrScratchExited) the verdict says so too, else it is
// empty and the drill can be run again.
func Drill(ctx context.Context, req DrillRequest) (Verdict, error) {
	v, _, err := DrillSum(ctx, req)
	return v, err
}

// judge compares the scratch server at addr with what the dump recorded.
func judge(ctx context.Context, addr string, d DumpResult) (Verdict, error) {
	ep := redisctl.Endpoint{Addr: addr}
	ks, err := redisctl.ReadKeyspace(ctx, ep)
	if err != nil {
		return Verdict{}, err
	}
	got := ks.Total()
	lo, hi := d.KeyRange()
	want := fmt.Sprint(lo)
	if hi != lo {
		want = fmt.Sprintf("%d to %d (the count moved during the dump)", lo, hi)
	}
	if got < lo || got > hi {
		return notVerified("%d keys, expected %s", got, want), nil
	}
	now, err := redisctl.DigestKeys(ctx, ep, d.Sample)
	if err != nil {
		return Verdict{}, err
	}
	bad := 0
	for i, k := range d.Sample {
		if now[i].Digest != k.Digest {
			bad++
		}
	}
	if bad > 0 {
		return notVerified("%d keys, but %d of %d sampled keys differ", got, bad, len(d.Sample)), nil
	}
	return Verdict{OK: true, Detail: fmt.Sprintf("%s%d keys, %d sampled keys match", api.VerifiedPrefix, got, len(d.Sample))}, nil
}

// RestoreRequest is one restore of a dump into an addon.
type RestoreRequest struct {
	Source
	// Scratch serves the dump; it must run the addon's engine version.
	// WorkDir as in DrillRequest.
	Scratch Scratch
	WorkDir string
	// Addr and Password reach the addon's primary, whose dataset the
	// dump replaces.
	Addr, Password string
	// Batch is the keys moved per round trip (redisctl.CopyKeys); 0 means
	// redisctl.DefaultCopyBatch.
	Batch int
}

// Restore replaces the dataset of the addon's primary by a stored dump:
// Fetch (checksum, decryption: a corrupt dump is refused before anything
// touches the primary), Unpack, a scratch server loading it, then
// redisctl.CopyKeys from the scratch into the primary (FLUSHALL ASYNC,
// then every key with its TTL), and the scratch stopped. See the package
// comment for why through the live primary. It returns what was copied.
func Restore(ctx context.Context, req RestoreRequest) (redisctl.CopyStats, error) {
	var st redisctl.CopyStats
	if req.Addr == "" {
		return st, errors.New("restore: no primary address")
	}
	err := withScratch(ctx, req.Source, req.Scratch, req.WorkDir, nil, nil, func(addr string) error {
		var err error
		st, err = redisctl.CopyKeys(ctx, redisctl.Endpoint{Addr: addr}, redisctl.Endpoint{Addr: req.Addr, Password: req.Password}, req.Batch)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("restore %s into %s: %w", req.Key, req.Addr, err)
	}
	return st, nil
}

// errMalformed marks an archive that authenticated but did not unpack.
var errMalformed = errors.New("the archive is malformed")

// withScratch fetches and unpacks src into a new directory of workDir
// (Fetch's plaintext also written to tee, unless nil; *fetched, unless
// nil, set once Fetch verified the whole object), starts a scratch server
// on it, runs fn with its address, then stops it and removes the
// directory, whatever happened.
func withScratch(ctx context.Context, src Source, sc Scratch, workDir string, tee io.Writer, fetched *bool, fn func(addr string) error) (err error) {
	if sc == nil || src.Store == nil {
		return errors.New("no scratch or no store")
	}
	if workDir == "" {
		workDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(workDir, "backup-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := fetchUnpack(ctx, src, dir, tee, fetched); err != nil {
		return err
	}
	addr, stop, err := sc.Start(ctx, dir)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if serr := stop(sctx); serr != nil && err == nil {
			err = serr
		}
	}()
	return fn(addr)
}

// fetchUnpack streams src through Fetch into Unpack (and tee, unless nil;
// no archive on disk): the files are used only once Fetch has verified
// the whole object.
func fetchUnpack(ctx context.Context, src Source, dir string, tee io.Writer, fetched *bool) error {
	pr, pw := io.Pipe()
	var dst io.Writer = pw
	if tee != nil {
		dst = io.MultiWriter(pw, tee)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, src.Store, src.Key, src.Keyring, src.KeyID, src.Checksum, dst)
		pw.CloseWithError(err)
		done <- err
	}()
	uerr := Unpack(pr, dir)
	pr.CloseWithError(errUnpackStopped) // Fetch's writes fail if Unpack gave up
	ferr := <-done
	if fetched != nil {
		*fetched = ferr == nil
	}
	switch {
	case ferr != nil && !errors.Is(ferr, errUnpackStopped):
		return ferr // the unpack error, if any, follows from it
	case uerr != nil:
		return fmt.Errorf("%w: %v", errMalformed, uerr)
	}
	return nil
}

var errUnpackStopped = errors.New("unpack stopped reading")
