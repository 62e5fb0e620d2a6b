package sysstats

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cacheplane/cacheplane/api"
)

// Names of a Redis/Valkey data dir's database files, as cacheplane renders
// them (the engines' defaults).
const (
	RDBFileName = "dump.rdb"
	AOFDirName  = "appendonlydir"  // Redis ≥ 7: base + incr files + manifest
	AOFFileName = "appendonly.aof" // Redis < 7: one file
)

// DataDirSize sums the apparent sizes of dir's database files: dump.rdb,
// every regular file in appendonlydir/, and appendonly.aof. Missing files
// count as 0 (a new database has none); a missing or unreadable dir is an
// error. Temporary files of a running BGSAVE or rewrite are not counted.
func DataDirSize(dir string) (api.DataSize, error) {
	d := api.DataSize{Dir: dir}
	fi, err := os.Stat(dir)
	if err != nil {
		return d, fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return d, fmt.Errorf("data dir %s: not a directory", dir)
	}
	if d.RDBBytes, err = regularSize(filepath.Join(dir, RDBFileName)); err != nil {
		return d, err
	}
	legacy, err := regularSize(filepath.Join(dir, AOFFileName))
	if err != nil {
		return d, err
	}
	d.AOFBytes = legacy
	entries, err := os.ReadDir(filepath.Join(dir, AOFDirName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return d, fmt.Errorf("data dir: %w", err)
	}
	for _, e := range entries {
		n, err := regularSize(filepath.Join(dir, AOFDirName, e.Name()))
		if err != nil {
			return d, err
		}
		d.AOFBytes += n
	}
	d.TotalBytes = d.RDBBytes + d.AOFBytes
	return d, nil
}

// regularSize is the size of a regular file, 0 when it does not exist (or
// vanished, as AOF files do during a rewrite) or is not a regular file.
func regularSize(path string) (uint64, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("data dir: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, nil
	}
	return uint64(fi.Size()), nil
}
