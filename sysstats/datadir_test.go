package sysstats

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

func TestDataDirSize(t *testing.T) {
	write := func(t *testing.T, path string, n int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		files    map[string]int
		rdb, aof uint64
	}{
		{"empty (new database)", nil, 0, 0},
		{"rdb only", map[string]int{"dump.rdb": 1000}, 1000, 0},
		{"redis 7 aof dir", map[string]int{
			"dump.rdb": 10,
			"appendonlydir/appendonly.aof.1.base.rdb": 300,
			"appendonlydir/appendonly.aof.1.incr.aof": 40,
			"appendonlydir/appendonly.aof.manifest":   5,
		}, 10, 345},
		{"legacy aof file", map[string]int{"appendonly.aof": 77, "dump.rdb": 3}, 3, 77},
		{"other files ignored", map[string]int{"dump.rdb": 1, "temp-123.rdb": 999, "nodes.conf": 50}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, n := range tt.files {
				write(t, filepath.Join(dir, name), n)
			}
			got, err := DataDirSize(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := api.DataSize{Dir: dir, RDBBytes: tt.rdb, AOFBytes: tt.aof, TotalBytes: tt.rdb + tt.aof}
			if got != want {
				t.Fatalf("DataDirSize = %+v, want %+v", got, want)
			}
		})
	}
	t.Run("missing dir is an error", func(t *testing.T) {
		if _, err := DataDirSize(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("no error for a missing data dir")
		}
	})
	t.Run("a file is not a dir", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		write(t, f, 1)
		if _, err := DataDirSize(f); err == nil {
			t.Fatal("no error for a file")
		}
	})
}
