package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

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
func DrillSum(ctx context.Context, req DrillRequest) (Verdict, ArchiveSum, error) {
	var v Verdict
	sum := &hashCounter{w: io.Discard, h: sha256.New()}
	fetched := false
	err := withScratch(ctx, req.Source, req.Scratch, req.WorkDir, sum, &fetched, func(addr string) error {
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
