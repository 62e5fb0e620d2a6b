package cli

// The backup verbs against a fake admin socket (an http server on a unix
// socket speaking the api package's paths): the subject is the CLI's
// argument checks, its tables and, above all, the download's file
// handling — the right name, a verified file or none at all.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
)

type fakeAdmin struct {
	sock string

	mu       sync.Mutex
	requests []string
	backups  []api.Backup
	// Download: the record sent in the header, the bytes streamed (cut
	// after cutAt bytes when > 0, the connection then dropped), or an
	// error answer.
	record  api.Backup
	archive []byte
	cutAt   int
	stallAt int // > 0: stream this many bytes, then nothing until the client gives up
	dlErr   *api.ErrorBody
	// Operations: what GET /v1/operations answers.
	ops        []api.Operation
	restoreReq api.BackupRestoreRequest
	createResp api.BackupCreateResponse
}

func newFakeAdmin(t *testing.T) *fakeAdmin {
	f := &fakeAdmin{sock: filepath.Join(t.TempDir(), "admin.sock")}
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/backups", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSONTest(w, http.StatusOK, f.backups)
	})
	mux.HandleFunc("POST /v1/backups", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSONTest(w, http.StatusAccepted, f.createResp)
	})
	mux.HandleFunc("POST /v1/backups/{id}/restore", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		_ = json.NewDecoder(r.Body).Decode(&f.restoreReq)
		op := api.Operation{ID: "op-r", App: f.restoreReq.App, Kind: api.OpRestore, State: api.OpPending, BackupID: r.PathValue("id")}
		writeJSONTest(w, http.StatusAccepted, api.BackupRestoreResponse{Operation: op, Message: "Restore of backup " + r.PathValue("id") + " started"})
	})
	mux.HandleFunc("GET /v1/operations", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSONTest(w, http.StatusOK, f.ops)
	})
	mux.HandleFunc("GET /v1/backups/{id}/download", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		rec, data, cut, stall, dlErr := f.record, f.archive, f.cutAt, f.stallAt, f.dlErr
		f.mu.Unlock()
		if dlErr != nil {
			writeJSONTest(w, http.StatusUnprocessableEntity, dlErr)
			return
		}
		h, _ := api.EncodeBackupHeader(rec)
		w.Header().Set(api.BackupHeader, h)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		if stall > 0 {
			_, _ = w.Write(data[:stall])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		if cut > 0 {
			_, _ = w.Write(data[:cut])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // drop the connection mid-body
		}
		_, _ = w.Write(data)
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func writeJSONTest(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeAdmin) reqs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// run runs the CLI against f; it returns stdout, stderr and the error.
func (f *fakeAdmin) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := NewRoot("cacheplane")
	var out, errOut strings.Builder
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"--socket", f.sock, "--timeout", "10s"}, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestBackupVerbsRefuseBadArguments(t *testing.T) {
	f := newFakeAdmin(t)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"backups without an app", []string{"backups"}, "app"},
		{"create without an app", []string{"backups-create"}, "app"},
		{"create with a bad app", []string{"backups-create", "--app", "My App"}, "app"},
		{"restore without --confirm", []string{"backups-restore", "--app", "my-app", "--backup", "my-app-3030-20261207"}, "pass --confirm my-app"},
		{"restore with another app's name", []string{"backups-restore", "--app", "my-app", "--backup", "my-app-3030-20261207", "--confirm", "my-ap"}, `--confirm "my-ap" is not the app's name`},
		{"restore without a backup", []string{"backups-restore", "--app", "my-app", "--confirm", "my-app"}, "backup id is missing"},
		{"restore with a bad backup id", []string{"backups-restore", "--app", "my-app", "--backup", "../x", "--confirm", "my-app"}, "malformed"},
		{"download with a bad backup id", []string{"backups-download", "--app", "my-app", "--backup", "latest"}, "malformed"},
		{"download into a missing dir", []string{"backups-download", "--app", "my-app", "--output", filepath.Join(t.TempDir(), "none")}, "--output"},
		{"download into a file", []string{"backups-download", "--app", "my-app", "--output", file}, "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.run(t, tc.args...)
			if err == nil || !strings.Contains(api.Message(err), tc.want) || exitCode(err) != 2 {
				t.Fatalf("err %v (exit %d); want %q and exit 2", err, exitCode(err), tc.want)
			}
		})
	}
	if r := f.reqs(); len(r) != 0 {
		t.Fatalf("refused commands reached the coordinator: %v", r)
	}
}

func TestBackupsTable(t *testing.T) {
	f := newFakeAdmin(t)
	day := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	f.backups = []api.Backup{
		{ID: "my-app-3030-20261206", App: "my-app", Kind: api.BackupPeriodic, CreatedAt: day.Add(-23 * time.Hour), Status: api.BackupDone, SizeBytes: 1536, Verified: "not verified: 3 keys, expected 5"},
		{ID: "my-app-3030-m20261207T101500Z", App: "my-app", Kind: api.BackupManual, Pinned: true, CreatedAt: day.Add(10*time.Hour + 15*time.Minute), Status: api.BackupRunning},
		{ID: "my-app-3030-20261207", App: "my-app", Kind: api.BackupPeriodic, CreatedAt: day.Add(time.Hour), Status: api.BackupDone, SizeBytes: 12 << 20, Verified: "verified: 50000 keys, 32 sampled keys match"},
		{ID: "my-app-3030-20261205", App: "my-app", Kind: api.BackupPeriodic, CreatedAt: day.Add(-47 * time.Hour), Status: api.BackupError, Reason: "the replica is not in sync"},
	}
	out, _, err := f.run(t, "backups", "--app", "my-app")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backups:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ids []string
	for _, l := range lines {
		if fs := strings.Fields(strings.Trim(l, "| ")); len(fs) > 0 && strings.HasPrefix(fs[0], "my-app-") {
			ids = append(ids, fs[0])
		}
	}
	if strings.Join(ids, " ") != "my-app-3030-m20261207T101500Z my-app-3030-20261207 my-app-3030-20261206 my-app-3030-20261205" {
		t.Fatalf("not newest first: %v", ids)
	}
	for _, want := range []string{"CREATED AT", "VERIFIED", "KIND", "12.0 MB", "1.5 KB", "| yes ", "no: 3 keys, expected 5", "error: the replica is not in sync", "manual (pinned)", "running"} {
		if !strings.Contains(out, want) {
			t.Errorf("backups lacks %q", want)
		}
	}
	out, _, err = f.run(t, "backups", "--app", "my-app", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got []api.Backup
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 4 || got[0].ID != "my-app-3030-m20261207T101500Z" {
		t.Fatalf("--json: %v, %+v", err, got)
	}
	f.backups = nil
	if out, _, err = f.run(t, "backups", "--app", "my-app"); err != nil || !strings.Contains(out, "backups-create --app my-app") {
		t.Fatalf("no backups: %q, %v", out, err)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestBackupsDownload(t *testing.T) {
	archive := []byte(strings.Repeat("a tar.gz stands here; ", 50000)) // 1.1 MB
	sum := sha256.Sum256(archive)
	good := api.Backup{ID: "my-app-3030-20261207", AddonID: "my-app-3030", App: "my-app", Seq: 12, Status: api.BackupDone,
		CreatedAt: time.Date(2026, 12, 7, 0, 4, 5, 0, time.UTC), ArchiveBytes: int64(len(archive)), ArchiveChecksum: hex.EncodeToString(sum[:])}
	name := "20261207000405_my-app_12.tar.gz"
	if backup.DownloadName(good) != name {
		t.Fatalf("DownloadName %q", backup.DownloadName(good))
	}
	badSum := good
	badSum.ArchiveChecksum = strings.Repeat("0", 64)
	longer := good
	longer.ArchiveBytes++
	noSum := good
	noSum.ArchiveBytes, noSum.ArchiveChecksum = 0, ""
	flipped := slices.Clone(archive)
	flipped[len(flipped)/2] ^= 1

	for _, tc := range []struct {
		name    string
		record  api.Backup
		data    []byte
		cutAt   int
		stallAt int
		dlErr   *api.ErrorBody
		args    []string
		wantErr string
		wantOut string
	}{
		{name: "latest, verified", record: good, data: archive, wantOut: "size and SHA-256 verified"},
		{name: "by id", record: good, data: archive, args: []string{"--backup", good.ID}, wantOut: "written to"},
		{name: "a flipped byte", record: good, data: flipped, wantErr: "backup my-app-3030-20261207 is corrupt: SHA-256"},
		{name: "the record's checksum differs", record: badSum, data: archive, wantErr: "backup my-app-3030-20261207 is corrupt: SHA-256"},
		{name: "a byte short", record: longer, data: archive, wantErr: "is corrupt: 1100000 bytes received, its record says 1100001"},
		{name: "the stream breaks", record: good, data: archive, cutAt: 300000, wantErr: "backup my-app-3030-20261207 is corrupt: the stream broke after"},
		{name: "the stream stalls", record: good, data: archive, stallAt: 200000, args: []string{"--timeout", "300ms"}, wantErr: "backup my-app-3030-20261207 is corrupt: the download stalled after 200000 of 1100000 bytes"},
		{name: "refused as corrupt by the coordinator", dlErr: &api.ErrorBody{Code: "corrupt", Error: "backup my-app-3030-20261207 is corrupt: checksum mismatch"}, wantErr: "is corrupt: checksum mismatch"},
		{name: "no backup", dlErr: &api.ErrorBody{Code: "not_found", Error: "app my-app has no good backup"}, wantErr: "no good backup"},
		{name: "a record without archive figures", record: noSum, data: archive, wantOut: "NOT verified"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAdmin(t)
			f.record, f.archive, f.cutAt, f.stallAt, f.dlErr = tc.record, tc.data, tc.cutAt, tc.stallAt, tc.dlErr
			dir := t.TempDir()
			out, errOut, err := f.run(t, append([]string{"backups-download", "--app", "my-app", "--output", dir}, tc.args...)...)
			t.Logf("stdout %q, stderr %q, err %v", out, errOut, err)
			wantPath := "/v1/backups/latest/download?app=my-app"
			if len(tc.args) > 0 && tc.args[0] == "--backup" {
				wantPath = "/v1/backups/" + good.ID + "/download?app=my-app"
			}
			if r := f.reqs(); len(r) != 1 || r[0] != "GET "+wantPath {
				t.Fatalf("requests %v; want GET %s", r, wantPath)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(api.Message(err), tc.wantErr) || exitCode(err) == 0 {
					t.Fatalf("err %v; want %q", err, tc.wantErr)
				}
				if names := dirNames(t, dir); len(names) != 0 {
					t.Fatalf("a failed download left %v", names)
				}
				return
			}
			if err != nil || !strings.Contains(out, tc.wantOut) {
				t.Fatalf("out %q, err %v; want %q", out, err, tc.wantOut)
			}
			if names := dirNames(t, dir); len(names) != 1 || names[0] != name {
				t.Fatalf("files %v; want only %s", names, name)
			}
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || string(got) != string(archive) {
				t.Fatalf("file: %d bytes, %v", len(got), err)
			}
			if fi, _ := os.Stat(filepath.Join(dir, name)); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v", fi.Mode().Perm())
			}
			if !strings.Contains(errOut, name+": 1.0 MB in") { // not a terminal: one line at the end
				t.Errorf("stderr %q: want a final line", errOut)
			}
		})
	}

	// --json, and the current directory by default.
	f := newFakeAdmin(t)
	f.record, f.archive = good, archive
	dir := t.TempDir()
	t.Chdir(dir)
	out, _, err := f.run(t, "backups-download", "--app", "my-app", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res DownloadResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Verified || res.Path != name || res.Bytes != int64(len(archive)) || res.SHA256 != good.ArchiveChecksum {
		t.Fatalf("--json: %v, %+v", err, res)
	}
	if names := dirNames(t, dir); len(names) != 1 || names[0] != name {
		t.Fatalf("files %v", names)
	}
}

func TestCheckArchive(t *testing.T) {
	b := api.Backup{ID: "x-20261207", ArchiveBytes: 10, ArchiveChecksum: strings.Repeat("ab", 32)}
	for _, tc := range []struct {
		name string
		b    api.Backup
		n    int64
		sum  string
		want string
	}{
		{"match", b, 10, strings.Repeat("ab", 32), ""},
		{"match, upper case", b, 10, strings.Repeat("AB", 32), ""},
		{"size", b, 9, strings.Repeat("ab", 32), "9 bytes received, its record says 10"},
		{"sum", b, 10, strings.Repeat("cd", 32), "SHA-256"},
		{"no figures", api.Backup{ID: "x-20261207"}, 10, "whatever", ""},
	} {
		err := checkArchive(tc.b, tc.n, tc.sum)
		if (tc.want == "") != (err == nil) || err != nil && (!strings.Contains(err.Error(), tc.want) || !errors.Is(err, api.ErrCorrupt) || !strings.Contains(err.Error(), "backup x-20261207 is corrupt")) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
}

func TestBackupsCreateAndRestoreWait(t *testing.T) {
	f := newFakeAdmin(t)
	b := api.Backup{ID: "my-app-3030-m20261207T101500Z", App: "my-app", Kind: api.BackupManual, Status: api.BackupRunning}
	op := api.Operation{ID: "op-1", App: "my-app", Kind: api.OpBackup, State: api.OpPending, BackupID: b.ID,
		Steps: []api.Step{{Name: "dump", State: api.OpPending}}}
	f.createResp = api.BackupCreateResponse{Backup: b, Operation: op, Message: "Backup " + b.ID + " is being taken"}

	out, _, err := f.run(t, "backups-create", "--app", "my-app")
	if err != nil || !strings.Contains(out, "is being taken") || !strings.Contains(out, "operations --app my-app") {
		t.Fatalf("create: %q, %v", out, err)
	}

	done := op
	done.State, done.Steps = api.OpDone, []api.Step{{Name: "dump", State: api.OpDone}}
	f.ops = []api.Operation{done}
	b.Status, b.SizeBytes, b.Verified = api.BackupDone, 2048, "verified: 20 keys, 20 sampled keys match"
	f.backups = []api.Backup{b}
	out, _, err = f.run(t, "backups-create", "--app", "my-app", "--wait")
	if err != nil || !strings.Contains(out, "Backup "+b.ID+" is done: 2.0 KB, verified: 20 keys") {
		t.Fatalf("create --wait: %q, %v", out, err)
	}

	failed := op
	failed.State, failed.Error = api.OpFailed, "dump: BGSAVE failed"
	f.ops = []api.Operation{failed}
	b.Status, b.Reason = api.BackupError, "BGSAVE failed"
	f.backups = []api.Backup{b}
	out, _, err = f.run(t, "backups-create", "--app", "my-app", "--wait")
	if err == nil || exitCode(err) != 1 || !strings.Contains(out, "failed: BGSAVE failed") {
		t.Fatalf("create --wait of a failing backup: %q, %v", out, err)
	}

	f.ops = []api.Operation{{ID: "op-r", App: "my-app", Kind: api.OpRestore, State: api.OpDone}}
	out, _, err = f.run(t, "backups-restore", "--app", "my-app", "--backup", "my-app-3030-20261207", "--confirm", "my-app", "--wait")
	if err != nil || !strings.Contains(out, "is restored into app my-app") {
		t.Fatalf("restore --wait: %q, %v", out, err)
	}
	f.mu.Lock()
	req := f.restoreReq
	f.mu.Unlock()
	if req.App != "my-app" || req.Confirm != "my-app" {
		t.Fatalf("restore request %+v", req)
	}
	f.ops = []api.Operation{{ID: "op-r", App: "my-app", Kind: api.OpRestore, State: api.OpFailed, Error: "restore: backup is corrupt"}}
	_, _, err = f.run(t, "backups-restore", "--app", "my-app", "--backup", "my-app-3030-20261207", "--confirm", "my-app", "--wait")
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "backup is corrupt") {
		t.Fatalf("restore --wait of a failing restore: %v", err)
	}
}
