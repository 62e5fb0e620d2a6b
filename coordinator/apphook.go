package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

// appHook tells an app that what it runs on changed (a plan change, an
// engine upgrade): the fleet's hook command (config app_hook_command, run
// without a shell, with CACHEPLANE_ADDON_ID, CACHEPLANE_APP,
// CACHEPLANE_CHANGE, CACHEPLANE_OPERATION_ID and REDIS_URL added to the
// coordinator's environment) and/or webhook (app_hook_url: a POST of
// api.AppHookEvent as JSON). It runs on the leader as the engine's
// NotifyApp action, each attempt bounded by timeout; the engine paces and
// counts the attempts (operation.NotifyStep). A hook may run more than
// once for one change (a retry after a timeout, a new leader after one
// that died mid-attempt): it must be idempotent.
//
// What it says in errors and logs never holds the addon's password, the
// URL's credentials nor its path (a webhook path is often a secret
// token): the webhook is named by scheme and host only.
type appHook struct {
	command  []string
	url      string
	timeout  time.Duration
	attempts int
	every    time.Duration
	client   *http.Client
}

func newAppHook(cfg Config) appHook {
	return appHook{
		command: cfg.AppHookCommand, url: cfg.AppHookURL,
		timeout: time.Duration(cfg.AppHookTimeout), attempts: cfg.AppHookAttempts, every: time.Duration(cfg.AppHookRetryAfter),
		client: &http.Client{
			// A redirect would turn the POST into a GET: answer it as a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// policy is the hook as the pure side paces it.
func (h appHook) policy() operation.AppHook {
	return operation.AppHook{Describe: h.describe(), Attempts: h.attempts, Every: h.every}
}

// describe names what runs, without secrets ("" when nothing is set).
func (h appHook) describe() string {
	var parts []string
	if len(h.command) > 0 {
		parts = append(parts, "command "+h.command[0])
	}
	if h.url != "" {
		parts = append(parts, "webhook "+webhookName(h.url))
	}
	return strings.Join(parts, "; ")
}

// webhookName is scheme://host of a webhook URL.
func webhookName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host
}

// run tells the app once: the command, then the webhook (each once, even
// when the other failed). The error names each part that failed.
func (h appHook) run(ctx context.Context, ev api.AppHookEvent) error {
	var errs []string
	if len(h.command) > 0 {
		if err := h.runCommand(ctx, ev); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if h.url != "" {
		if err := h.post(ctx, ev); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(h.scrub(strings.Join(errs, "; "), ev))
}

// scrub removes every secret the event or the config holds from s.
func (h appHook) scrub(s string, ev api.AppHookEvent) string {
	var secrets []string
	if u, err := url.Parse(ev.RedisURL); err == nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw)
		}
	}
	secrets = append(secrets, ev.RedisURL)
	if u, err := url.Parse(h.url); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			secrets = append(secrets, pw)
		}
		secrets = append(secrets, u.User.String())
	}
	if h.url != "" {
		secrets = append(secrets, h.url)
	}
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) }) // a URL before its password
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

func (h appHook) runCommand(ctx context.Context, ev api.AppHookEvent) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	name := "command " + h.command[0]
	cmd := exec.CommandContext(ctx, h.command[0], h.command[1:]...)
	cmd.Env = append(os.Environ(),
		"CACHEPLANE_ADDON_ID="+ev.AddonID, "CACHEPLANE_APP="+ev.App, "CACHEPLANE_CHANGE="+ev.Change,
		"CACHEPLANE_OPERATION_ID="+ev.OperationID, "REDIS_URL="+ev.RedisURL)
	out := &tailBuffer{max: 400}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, killed whole on timeout, so a script's
	// children do not outlive it holding its output open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%s: no answer within %s (killed)", name, h.timeout)
	}
	msg := fmt.Sprintf("%s: %v", name, err)
	if o := strings.TrimSpace(out.String()); o != "" {
		msg += ": " + strings.Join(strings.Fields(o), " ")
	}
	return errors.New(msg)
}

func (h appHook) post(ctx context.Context, ev api.AppHookEvent) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	name := "webhook " + webhookName(h.url)
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: bad URL", name)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cacheplane-coordinator")
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error // names the URL, path included: keep only the cause
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no answer within %s", name, h.timeout)
		}
		return fmt.Errorf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", name, resp.Status)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
