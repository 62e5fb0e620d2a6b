package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/backupstore"
)

// ArchiveSum is the size and SHA-256 (hex) of a dump's plaintext archive:
// the tar.gz a download writes (api.Backup.ArchiveBytes and
// ArchiveChecksum, which the CLI checks).
type ArchiveSum struct {
	Bytes  int64
	SHA256 string
}

// DrillSum is Drill that also returns the plaintext archive's ArchiveSum,
// counted and hashed as the drill's Fetch streams it into Unpack: the
// stored object is read once. The sum is set whenever Fetch read the whole
// object and verified it (checksum, age), whatever the verdict; it is zero
// when the drill stopped before.
//
// It repeats Drill's withScratch and fetchUnpack with a tee on Fetch's
// output (drill.go could call this with no tee and drop its own copy).
func DrillSum(ctx context.Context, req DrillRequest) (Verdict, ArchiveSum, error) {
	var v Verdict
	sum := &hashCounter{w: io.Discard, h: sha256.New()}
	fetched := false
	err := withScratchTee(ctx, req.Source, req.Scratch, req.WorkDir, sum, &fetched, func(addr string) error {
		var err error
		v, err = judge(ctx, addr, req.Dump)
		return err
	})
	var as ArchiveSum
	if fetched {
		as = ArchiveSum{Bytes: sum.n, SHA256: hex.EncodeToString(sum.h.Sum(nil))}
	}
	switch {
	case err == nil:
		return v, as, nil
	case errors.Is(err, backupstore.ErrCorrupt), errors.Is(err, ErrScratchExited), errors.Is(err, errMalformed):
		line, _, _ := strings.Cut(err.Error(), "\n") // a scratch's log lines stay in the error
		return notVerified("%s", line), as, fmt.Errorf("drill: %w", err)
	}
	return Verdict{}, as, fmt.Errorf("drill: %w", err)
}

// withScratchTee is withScratch with Fetch's plaintext also written to
// tee; *fetched is set once Fetch returned without error.
func withScratchTee(ctx context.Context, src Source, sc Scratch, workDir string, tee io.Writer, fetched *bool, fn func(addr string) error) (err error) {
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
	if err := fetchUnpackTee(ctx, src, dir, tee, fetched); err != nil {
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

// fetchUnpackTee is fetchUnpack with Fetch's output written to tee too.
func fetchUnpackTee(ctx context.Context, src Source, dir string, tee io.Writer, fetched *bool) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, src.Store, src.Key, src.Keyring, src.KeyID, src.Checksum, io.MultiWriter(pw, tee))
		pw.CloseWithError(err)
		done <- err
	}()
	uerr := Unpack(pr, dir)
	pr.CloseWithError(errUnpackStopped) // Fetch's writes fail if Unpack gave up
	ferr := <-done
	*fetched = ferr == nil
	switch {
	case ferr != nil && !errors.Is(ferr, errUnpackStopped):
		return ferr
	case uerr != nil:
		return fmt.Errorf("%w: %v", errMalformed, uerr)
	}
	return nil
}
