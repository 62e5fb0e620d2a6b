package cli

// The backup verbs: backups, backups-create, backups-download,
// backups-restore.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
)

// Waiting for an operation (--wait).
const (
	defaultWaitTimeout = time.Hour
	waitPoll           = time.Second
)

func backupsCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "backups --app APP",
		Short: "List the backups of an app's addon, newest first: ID, CREATED AT, SIZE, STATUS, VERIFIED, KIND",
		Long: `List the backups of an app's addon, newest first. STATUS is running, done, or error with
the reason; VERIFIED is the restore drill's outcome (every backup is loaded into a throw-away
redis-server and its keys checked): yes, no with why, or - while not drilled yet. KIND is
periodic (the daily backup) or manual (backups-create; pinned ones are kept whatever their age).`,
		Example: "  cacheplane backups --app my-app",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			bs, err := g.client().Backups(ctx, app)
			if err != nil {
				return err
			}
			sortBackups(bs)
			if g.json {
				return printJSON(cmd.OutOrStdout(), bs)
			}
			if len(bs) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "No backup of app %s yet. Take one with: cacheplane backups-create --app %s\n", app, app)
				return nil
			}
			return printTable(cmd.OutOrStdout(), []string{"ID", "CREATED AT", "SIZE", "STATUS", "VERIFIED", "KIND"}, backupRows(bs))
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	return cmd
}

// sortBackups orders bs newest first (by creation, then id).
func sortBackups(bs []api.Backup) {
	sort.SliceStable(bs, func(i, j int) bool {
		if !bs[i].CreatedAt.Equal(bs[j].CreatedAt) {
			return bs[i].CreatedAt.After(bs[j].CreatedAt)
		}
		return bs[i].ID > bs[j].ID
	})
}

// backupRows are the table rows of bs (pure).
func backupRows(bs []api.Backup) [][]string {
	rows := make([][]string, 0, len(bs))
	for _, b := range bs {
		size := "-"
		if b.SizeBytes > 0 {
			size = bytes(uint64(b.SizeBytes))
		}
		status := string(b.Status)
		switch {
		case b.Deleted:
			status = "deleted"
			if b.DeletedReason != "" {
				status += ": " + b.DeletedReason
			}
		case b.Reason != "":
			status += ": " + b.Reason
		}
		kind := string(b.Kind)
		if b.Pinned {
			kind += " (pinned)"
		}
		rows = append(rows, []string{b.ID, b.CreatedAt.Local().Format("2006-01-02 15:04:05"), size, status, verified(b.Verified), kind})
	}
	return rows
}

// verified is the VERIFIED column for a drill's outcome (pure).
func verified(v string) string {
	switch {
	case v == "":
		return "-"
	case strings.HasPrefix(v, api.VerifiedPrefix):
		return "yes"
	case strings.HasPrefix(v, api.NotVerifiedPrefix):
		return "no: " + strings.TrimPrefix(v, api.NotVerifiedPrefix)
	}
	return v
}

func backupsCreateCmd(g *globals) *cobra.Command {
	var (
		app         string
		pin, wait   bool
		waitTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backups-create --app APP [--pin] [--wait]",
		Short: "Take a backup of an app's addon now (on its replica when it has one), then restore-drill it",
		Long: `Take a manual backup of an app's addon now: a BGSAVE on the replica (the only node of a starter),
streamed compressed and encrypted into the backup store, then loaded into a throw-away
redis-server to check its keys. It starts an operation and returns; --wait follows it until the
backup is done or failed. --pin keeps the backup whatever its age (retention skips it).`,
		Example: "  cacheplane backups-create --app my-app --wait",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateAppName(app); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			c := g.client()
			res, err := c.BackupCreate(ctx, api.BackupCreateRequest{App: app, Pin: pin})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !wait {
				if g.json {
					return printJSON(out, res)
				}
				fmt.Fprintf(out, "-----> %s\n", res.Message)
				fmt.Fprintf(out, "Follow it with: cacheplane operations --app %s (or backups-create --wait)\n", app)
				return nil
			}
			if !g.json {
				fmt.Fprintf(out, "-----> %s\n", res.Message)
			}
			op, err := waitOperation(cmd, g, c, app, res.Operation, waitTimeout)
			if err != nil {
				return err
			}
			b, err := findBackup(cmd, g, c, app, res.Backup.ID)
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(out, map[string]any{"operation": op, "backup": b}); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(out, backupOutcome(b))
			}
			if op.State != api.OpDone || b.Status != api.BackupDone {
				return fmt.Errorf("backup %s of app %s: %s", b.ID, app, opFailure(op, b.Reason))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().BoolVar(&pin, "pin", false, "keep this backup whatever its age")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backup is done or failed")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", defaultWaitTimeout, "with --wait, give up waiting after this long (the operation goes on)")
	return cmd
}

// backupOutcome is one line about a finished backup (pure).
func backupOutcome(b api.Backup) string {
	switch b.Status {
	case api.BackupDone:
		v := b.Verified
		if v == "" {
			v = "not drilled yet"
		}
		return fmt.Sprintf("-----> Backup %s is done: %s, %s", b.ID, bytes(uint64(b.SizeBytes)), v)
	case api.BackupError:
		return fmt.Sprintf("-----> Backup %s failed: %s", b.ID, b.Reason)
	}
	return fmt.Sprintf("-----> Backup %s is %s", b.ID, b.Status)
}

func opFailure(op api.Operation, reason string) string {
	switch {
	case op.Error != "":
		return fmt.Sprintf("operation %s %s: %s", op.ID, op.State, op.Error)
	case reason != "":
		return fmt.Sprintf("operation %s %s: %s", op.ID, op.State, reason)
	}
	return fmt.Sprintf("operation %s %s", op.ID, op.State)
}

// findBackup reads backup id of app's addon.
func findBackup(cmd *cobra.Command, g *globals, c *api.Client, app, id string) (api.Backup, error) {
	ctx, cancel := g.ctx(cmd)
	defer cancel()
	bs, err := c.Backups(ctx, app)
	if err != nil {
		return api.Backup{}, err
	}
	for _, b := range bs {
		if b.ID == id {
			return b, nil
		}
	}
	return api.Backup{}, fmt.Errorf("%w: backup %s of app %s is not listed", api.ErrNotFound, id, app)
}

// waitOperation polls op until it finished (done, failed, cancelled) or
// timeout passes, printing each step it reaches (unless --json).
func waitOperation(cmd *cobra.Command, g *globals, c *api.Client, app string, op api.Operation, timeout time.Duration) (api.Operation, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	out := cmd.OutOrStdout()
	last := ""
	for {
		if line := stepLine(op); line != last && !g.json {
			fmt.Fprintln(out, line)
			last = line
		}
		if op.State.Finished() {
			return op, nil
		}
		t := time.NewTimer(waitPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return op, fmt.Errorf("operation %s still %s after %s (it goes on: cacheplane operations --app %s): %w", op.ID, op.State, timeout, app, ctx.Err())
		case <-t.C:
		}
		cctx, ccancel := context.WithTimeout(ctx, g.timeout)
		ops, err := c.Operations(cctx, app, "")
		ccancel()
		if err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the loop
			}
			return op, err
		}
		found := false
		for _, o := range ops {
			if o.ID == op.ID {
				op, found = o, true
			}
		}
		if !found {
			return op, fmt.Errorf("%w: operation %s of app %s is not listed any more", api.ErrNotFound, op.ID, app)
		}
	}
}

// stepLine says where op is (pure).
func stepLine(op api.Operation) string {
	if op.State.Finished() {
		s := fmt.Sprintf("       operation %s %s", op.ID, op.State)
		if op.Error != "" {
			s += ": " + op.Error
		}
		return s
	}
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		return fmt.Sprintf("       operation %s %s", op.ID, op.State)
	}
	s := fmt.Sprintf("       step %d/%d %s", i+1, len(op.Steps), op.Steps[i].Name)
	if d := op.Steps[i].Detail; d != "" {
		s += ": " + d
	}
	return s
}

func backupsRestoreCmd(g *globals) *cobra.Command {
	var (
		app, id, confirm string
		wait             bool
		waitTimeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "backups-restore --app APP --backup ID --confirm APP [--wait]",
		Short: "Replace every key of an app's addon by a backup (asks --confirm APP)",
		Long: `Replace the data of an app's addon by one of its backups: the backup is checked (checksum,
decryption) and loaded into a throw-away redis-server, then the addon's primary is flushed and
every key copied into it; a replica follows through replication. Nothing restarts; writes the app
makes meanwhile are lost. The backup must be done and not refused by its drill. Because it
replaces the data, it asks for --confirm with the app's name. --wait follows the operation.`,
		Example: "  cacheplane backups-restore --app my-app --backup my-app-3030-20261207 --confirm my-app",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.BackupRestoreRequest{App: app, Confirm: confirm}
			if err := checkRestore(req, id); err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			c := g.client()
			res, err := c.BackupRestore(ctx, id, req)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !wait {
				if g.json {
					return printJSON(out, res)
				}
				fmt.Fprintf(out, "-----> %s\n", res.Message)
				fmt.Fprintf(out, "Follow it with: cacheplane operations --app %s (or backups-restore --wait)\n", app)
				return nil
			}
			if !g.json {
				fmt.Fprintf(out, "-----> %s\n", res.Message)
			}
			op, err := waitOperation(cmd, g, c, app, res.Operation, waitTimeout)
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(out, op); err != nil {
					return err
				}
			}
			if op.State != api.OpDone {
				return fmt.Errorf("restore of backup %s into app %s: %s", id, app, opFailure(op, ""))
			}
			if !g.json {
				fmt.Fprintf(out, "-----> Backup %s is restored into app %s\n", id, app)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().StringVar(&id, "backup", "", "backup id (see: cacheplane backups --app APP)")
	cmd.Flags().StringVar(&confirm, "confirm", "", "the app's name again: the restore replaces its data")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the restore is done or failed")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", defaultWaitTimeout, "with --wait, give up waiting after this long (the operation goes on)")
	return cmd
}

// checkRestore refuses a restore request before it is sent (pure).
func checkRestore(req api.BackupRestoreRequest, id string) error {
	if err := api.ValidateAppName(req.App); err != nil {
		return err
	}
	if err := api.ValidateBackupID(id); err != nil {
		return err
	}
	if req.Confirm != req.App {
		if req.Confirm == "" {
			return api.Invalidf("restoring backup %s replaces every key of app %s's addon: pass --confirm %s to go ahead", id, req.App, req.App)
		}
		return api.Invalidf("--confirm %q is not the app's name: restoring backup %s replaces every key of app %s's addon; pass --confirm %s to go ahead", req.Confirm, id, req.App, req.App)
	}
	return nil
}

func backupsDownloadCmd(g *globals) *cobra.Command {
	var app, id, dir string
	cmd := &cobra.Command{
		Use:   "backups-download --app APP [--backup ID] [--output DIR]",
		Short: "Download a backup (default: the latest good one) as <YYYYMMDDhhmmss>_<app>_<n>.tar.gz, checksum verified",
		Long: `Download a backup of an app's addon, decrypted: a tar.gz of the member's dump.rdb (and its AOF
files when AOF is on), named <YYYYMMDDhhmmss>_<app>_<n>.tar.gz, in the current directory or DIR.
Without --backup, the latest good backup. The file is written under a temporary name and
renamed once its size and SHA-256 match the backup's record: a corrupt backup or an interrupted
download leaves no file. A progress bar shows on a terminal.`,
		Example: "  cacheplane backups-download --app my-app\n  cacheplane backups-download --app my-app --backup my-app-3030-20261207 --output /tmp",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkDownload(app, id, dir); err != nil {
				return err
			}
			if dir == "" {
				dir = "."
			}
			res, err := download(cmd.Context(), g.client(), downloadRequest{
				App: app, ID: id, Dir: dir, IdleTimeout: g.timeout, Progress: cmd.ErrOrStderr(),
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, res)
			}
			note := "size and SHA-256 verified"
			if !res.Verified {
				note = "NOT verified: the backup's record has no archive checksum"
			}
			fmt.Fprintf(out, "-----> Backup %s written to %s (%s, %s)\n", res.Backup.ID, res.Path, bytes(uint64(res.Bytes)), note)
			return nil
		},
	}
	cmd.Flags().StringVarP(&app, "app", "a", "", "app name")
	cmd.Flags().StringVar(&id, "backup", "", "backup id (default: the latest good backup)")
	cmd.Flags().StringVarP(&dir, "output", "o", "", "directory to write the file in (default: the current directory)")
	return cmd
}

// checkDownload refuses bad arguments before anything is asked (a
// missing or non-directory DIR included).
func checkDownload(app, id, dir string) error {
	if err := api.ValidateAppName(app); err != nil {
		return err
	}
	if id != "" {
		if err := api.ValidateBackupID(id); err != nil {
			return err
		}
	}
	if dir != "" {
		fi, err := os.Stat(dir)
		if err != nil {
			return api.Invalidf("--output %s: %v", dir, errors.Unwrap(err))
		}
		if !fi.IsDir() {
			return api.Invalidf("--output %s is not a directory", dir)
		}
	}
	return nil
}

type downloadRequest struct {
	App, ID, Dir string
	// IdleTimeout gives up when the next bytes of the stream take longer
	// than this; the answer itself may take max(IdleTimeout,
	// minAnswerTimeout) (the coordinator checks the whole stored object
	// before it sends a byte).
	IdleTimeout time.Duration
	// Progress gets the progress bar when it is a terminal, else one
	// line at the end.
	Progress io.Writer
}

// DownloadResult is what backups-download wrote.
type DownloadResult struct {
	Backup api.Backup `json:"backup"`
	Path   string     `json:"path"`
	Bytes  int64      `json:"bytes"`
	SHA256 string     `json:"sha256"`
	// Verified: size and checksum matched the record (false only for a
	// record without them).
	Verified bool `json:"verified"`
}

// download streams the backup into a temporary file of req.Dir, checks it
// against the record and renames it to backup.DownloadName; on any
// failure the temporary file is removed and nothing else is written.
func download(ctx context.Context, c *api.Client, req downloadRequest) (res DownloadResult, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	answer := time.AfterFunc(max(req.IdleTimeout, minAnswerTimeout), func() { cancel(errNoAnswer) })
	body, b, err := c.BackupDownload(ctx, req.App, req.ID)
	answer.Stop()
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errNoAnswer) {
			return res, fmt.Errorf("download of app %s's backup: %w", req.App, cause)
		}
		return res, err
	}
	defer body.Close()
	idle := newIdleTimer(req.IdleTimeout, cancel)
	defer idle.stop()
	name := backup.DownloadName(b)
	if name != filepath.Base(name) || strings.HasPrefix(name, ".") || b.ID == "" {
		return res, fmt.Errorf("download: the coordinator's record names the file %q (backup %q)", name, b.ID)
	}
	res = DownloadResult{Backup: b, Path: filepath.Join(req.Dir, name)}
	tmp, err := os.CreateTemp(req.Dir, "."+name+".part-*")
	if err != nil {
		return res, fmt.Errorf("download backup %s: %w", b.ID, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	bar, finish := progress(req.Progress, b, name)
	h := sha256.New()
	start := time.Now()
	n, copyErr := io.Copy(io.MultiWriter(tmp, h, bar), idleReader{body, idle})
	finish(n, time.Since(start))
	res.Bytes, res.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	if copyErr != nil {
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errIdle):
			return res, fmt.Errorf("%w: backup %s is corrupt: the download stalled after %d of %s bytes (%v); nothing written", api.ErrCorrupt, b.ID, n, expected(b), cause)
		case ctx.Err() != nil:
			return res, fmt.Errorf("download of backup %s interrupted after %d bytes; nothing written: %w", b.ID, n, ctx.Err())
		}
		var pe *os.PathError
		if errors.As(copyErr, &pe) { // the local file, not the stream
			return res, fmt.Errorf("download backup %s: %w", b.ID, copyErr)
		}
		return res, fmt.Errorf("%w: backup %s is corrupt: the stream broke after %d of %s bytes (%v); nothing written", api.ErrCorrupt, b.ID, n, expected(b), copyErr)
	}
	if err := checkArchive(b, n, res.SHA256); err != nil {
		return res, err
	}
	res.Verified = b.ArchiveChecksum != ""
	if err := tmp.Sync(); err != nil {
		return res, fmt.Errorf("download backup %s: %w", b.ID, err)
	}
	if err := tmp.Close(); err != nil {
		return res, fmt.Errorf("download backup %s: %w", b.ID, err)
	}
	if err := os.Rename(tmp.Name(), res.Path); err != nil {
		return res, fmt.Errorf("download backup %s: %w", b.ID, err)
	}
	return res, nil
}

func expected(b api.Backup) string {
	if b.ArchiveBytes > 0 {
		return fmt.Sprint(b.ArchiveBytes)
	}
	return "?"
}

// checkArchive compares what was received with the record (pure): a
// mismatch is an api.ErrCorrupt error "backup X is corrupt: …".
func checkArchive(b api.Backup, n int64, sum string) error {
	if b.ArchiveBytes > 0 && n != b.ArchiveBytes {
		return fmt.Errorf("%w: backup %s is corrupt: %d bytes received, its record says %d; nothing written", api.ErrCorrupt, b.ID, n, b.ArchiveBytes)
	}
	if b.ArchiveChecksum != "" && !strings.EqualFold(sum, b.ArchiveChecksum) {
		return fmt.Errorf("%w: backup %s is corrupt: SHA-256 %s, its record says %s; nothing written", api.ErrCorrupt, b.ID, sum, b.ArchiveChecksum)
	}
	return nil
}

// progress returns the writer a download goes through for its progress
// bar (on w, when w is a terminal) and what to call at the end (finishes
// the bar, or prints one line when w is no terminal).
func progress(w io.Writer, b api.Backup, name string) (io.Writer, func(n int64, took time.Duration)) {
	if w == nil {
		return io.Discard, func(int64, time.Duration) {}
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		total := b.ArchiveBytes
		if total <= 0 {
			total = -1 // a spinner
		}
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(name),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
		return bar, func(int64, time.Duration) {
			if bar.IsFinished() {
				return
			}
			_ = bar.Exit() // stopped short (the error says why), or of unknown length: a newline
		}
	}
	return io.Discard, func(n int64, took time.Duration) {
		rate := float64(n) / max(took.Seconds(), 1e-3)
		fmt.Fprintf(w, "%s: %s in %s (%s/s)\n", name, bytes(uint64(n)), took.Round(time.Millisecond), bytes(uint64(rate)))
	}
}

// errIdle is the cause of a download cancelled for want of bytes;
// errNoAnswer of one whose answer did not come within minAnswerTimeout
// (or --timeout when longer).
var (
	errIdle     = errors.New("no data for too long")
	errNoAnswer = errors.New("the coordinator did not answer in time")
)

// minAnswerTimeout bounds the wait for a download's answer, which comes
// once the coordinator has read and checked the whole stored object.
const minAnswerTimeout = 10 * time.Minute

// idleTimer cancels a download when it is not touched for d.
type idleTimer struct {
	mu sync.Mutex
	t  *time.Timer
	d  time.Duration
}

func newIdleTimer(d time.Duration, cancel context.CancelCauseFunc) *idleTimer {
	if d <= 0 {
		return &idleTimer{}
	}
	return &idleTimer{d: d, t: time.AfterFunc(d, func() { cancel(fmt.Errorf("%w (%s)", errIdle, d)) })}
}

func (i *idleTimer) touch() {
	if i.t != nil {
		i.mu.Lock()
		i.t.Reset(i.d)
		i.mu.Unlock()
	}
}

func (i *idleTimer) stop() {
	if i.t != nil {
		i.t.Stop()
	}
}

// idleReader touches its timer on every read that got bytes.
type idleReader struct {
	r    io.Reader
	idle *idleTimer
}

func (r idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.idle.touch()
	}
	return n, err
}
