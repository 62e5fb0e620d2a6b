package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Client talks to a coordinator: over its admin unix socket (NewClient) or
// its peer API over mutual TLS (NewTLSPeerClient). Every call honours ctx. Calls that fail
// because no leader is available (503) or the socket is briefly unreachable
// are retried until RetryFor has passed: that spans a leader election.
type Client struct {
	base     string
	socket   string
	hc       *http.Client
	RetryFor time.Duration
}

// NewClient returns a client for the admin socket at path.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{base: "http://cacheplane", socket: socket, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}, RetryFor: 15 * time.Second}
}

// ErrNoSocket means nothing listens on the admin socket.
var ErrNoSocket = errors.New("no coordinator listening")

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	deadline := time.Now().Add(c.RetryFor)
	backoff := 50 * time.Millisecond
	for {
		err := c.once(ctx, method, path, body, out)
		if err == nil || !retryable(err) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-t.C:
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, ErrNoLeader) || errors.Is(err, ErrNotLeader)
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if c.socket != "" {
			var ne *net.OpError
			if errors.As(err, &ne) && ne.Op == "dial" {
				return fmt.Errorf("%w on %s (is cacheplane-coordinator running? pass --socket or set CACHEPLANE_SOCKET): %v", ErrNoSocket, c.socket, unwrapSyscall(err))
			}
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb = ErrorBody{Error: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data))), Code: "internal"}
		}
		return &RemoteError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// Plans lists the plans catalog.
func (c *Client) Plans(ctx context.Context) ([]Plan, error) {
	var out []Plan
	return out, c.do(ctx, http.MethodGet, "/v1/plans", nil, &out)
}

// Engines lists the engine catalog.
func (c *Client) Engines(ctx context.Context) ([]EngineVersion, error) {
	var out []EngineVersion
	return out, c.do(ctx, http.MethodGet, "/v1/engines", nil, &out)
}

// EnginePaths returns the engine catalog with every upgrade path between
// its versions.
func (c *Client) EnginePaths(ctx context.Context) (EngineCatalog, error) {
	var out EngineCatalog
	return out, c.do(ctx, http.MethodGet, "/v1/engines/paths", nil, &out)
}

// Hosts lists the hosts with their figures and memory commitments.
func (c *Client) Hosts(ctx context.Context) ([]HostView, error) {
	var out []HostView
	return out, c.do(ctx, http.MethodGet, "/v1/hosts", nil, &out)
}

// Addons lists the addons, of one app when app is not empty.
func (c *Client) Addons(ctx context.Context, app string, stale bool) ([]Addon, error) {
	q := url.Values{}
	if app != "" {
		q.Set("app", app)
	}
	if stale {
		q.Set("stale", "true")
	}
	var out []Addon
	return out, c.do(ctx, http.MethodGet, "/v1/addons?"+q.Encode(), nil, &out)
}

// Addon returns one addon.
func (c *Client) Addon(ctx context.Context, id string) (Addon, error) {
	var out Addon
	return out, c.do(ctx, http.MethodGet, "/v1/addons/"+url.PathEscape(id), nil, &out)
}

// AddonCreate adds an addon. A request id makes retries idempotent; one is
// generated when empty.
func (c *Client) AddonCreate(ctx context.Context, req AddonCreateRequest) (AddonCreateResponse, error) {
	if req.RequestID == "" {
		req.RequestID = NewRequestID()
	}
	var out AddonCreateResponse
	return out, c.do(ctx, http.MethodPost, "/v1/addons", req, &out)
}

// AddonRemove starts the removal of an app's addon.
func (c *Client) AddonRemove(ctx context.Context, app, id string) (AddonRemoveResponse, error) {
	var out AddonRemoveResponse
	return out, c.do(ctx, http.MethodDelete, "/v1/addons/"+url.PathEscape(id)+"?app="+url.QueryEscape(app), nil, &out)
}

// Env returns an app's environment variables.
func (c *Client) Env(ctx context.Context, app string) (EnvResponse, error) {
	var out EnvResponse
	return out, c.do(ctx, http.MethodGet, "/v1/env?app="+url.QueryEscape(app), nil, &out)
}

// AddonCA returns the CA certificate an app verifies its addon's TLS with.
func (c *Client) AddonCA(ctx context.Context, app string) (AddonCAResponse, error) {
	var out AddonCAResponse
	return out, c.do(ctx, http.MethodGet, "/v1/addons/ca?app="+url.QueryEscape(app), nil, &out)
}

// Operations lists operations, filtered by app and addon when not empty.
func (c *Client) Operations(ctx context.Context, app, addon string) ([]Operation, error) {
	q := url.Values{}
	if app != "" {
		q.Set("app", app)
	}
	if addon != "" {
		q.Set("addon", addon)
	}
	var out []Operation
	return out, c.do(ctx, http.MethodGet, "/v1/operations?"+q.Encode(), nil, &out)
}

// OperationCancel asks the coordinator to stop an operation at its next
// safe point.
func (c *Client) OperationCancel(ctx context.Context, id string) (OperationCancelResponse, error) {
	var out OperationCancelResponse
	return out, c.do(ctx, http.MethodPost, "/v1/operations/"+url.PathEscape(id)+"/cancel", nil, &out)
}

// Alive sends the agent's liveness signal.
func (c *Client) Alive(ctx context.Context, hostID string) error {
	return c.do(ctx, http.MethodPost, "/v1/agent/alive", AliveRequest{HostID: hostID}, nil)
}

// Cluster returns the coordinator cluster as the contacted member sees it.
func (c *Client) Cluster(ctx context.Context) (ClusterStatus, error) {
	var out ClusterStatus
	return out, c.do(ctx, http.MethodGet, "/v1/cluster", nil, &out)
}

// Join asks the contacted coordinator to join the cluster of peer.
func (c *Client) Join(ctx context.Context, peer, token string) (string, error) {
	var out map[string]string
	err := c.do(ctx, http.MethodPost, "/v1/cluster/join", JoinPeerRequest{Peer: peer, Token: token}, &out)
	return out["message"], err
}

// AddMember adds a coordinator as a voter (peer API).
func (c *Client) AddMember(ctx context.Context, req JoinRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/cluster/members", req, nil)
}

// RemoveMember removes a coordinator from the cluster.
func (c *Client) RemoveMember(ctx context.Context, id string) (string, error) {
	var out map[string]string
	err := c.do(ctx, http.MethodDelete, "/v1/cluster/members/"+url.PathEscape(id), nil, &out)
	return out["message"], err
}

// Register announces a host (agent API).
func (c *Client) Register(ctx context.Context, h Host) (Host, error) {
	var out Host
	return out, c.do(ctx, http.MethodPost, "/v1/agent/register", RegisterRequest{Host: h}, &out)
}

// Heartbeat reports a host's members (agent API).
func (c *Client) Heartbeat(ctx context.Context, req HeartbeatRequest) (HeartbeatResponse, error) {
	var out HeartbeatResponse
	return out, c.do(ctx, http.MethodPost, "/v1/agent/heartbeat", req, &out)
}

// Assignments is the blocking query for a host's members: it returns when
// the FSM index passes index or after wait.
func (c *Client) Assignments(ctx context.Context, hostID string, index uint64, wait time.Duration) (Assignments, error) {
	q := url.Values{}
	q.Set("host", hostID)
	q.Set("index", fmt.Sprint(index))
	q.Set("wait", wait.String())
	var out Assignments
	return out, c.do(ctx, http.MethodGet, "/v1/agent/assignments?"+q.Encode(), nil, &out)
}

// AddonStats returns the dashboard figures of an app's addon.
func (c *Client) AddonStats(ctx context.Context, app string) (AddonStats, error) {
	var out AddonStats
	return out, c.do(ctx, http.MethodGet, "/v1/stats?app="+url.QueryEscape(app), nil, &out)
}

// AddonSettings changes an app's addon settings (live, no restart).
func (c *Client) AddonSettings(ctx context.Context, req SettingsRequest) (AddonSettingsResponse, error) {
	var out AddonSettingsResponse
	return out, c.do(ctx, http.MethodPost, "/v1/settings", req, &out)
}

// HostDrain marks a host draining (drain) or ready again (undrain).
func (c *Client) HostDrain(ctx context.Context, id string, drain bool) (string, error) {
	verb := "undrain"
	if drain {
		verb = "drain"
	}
	var out map[string]string
	err := c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(id)+"/"+verb, nil, &out)
	return out["message"], err
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// AddonOfApp returns an app's addon with its members' observed states.
func (c *Client) AddonOfApp(ctx context.Context, app string) (Addon, error) {
	as, err := c.Addons(ctx, app, false)
	if err != nil {
		return Addon{}, err
	}
	if len(as) == 0 {
		return Addon{}, fmt.Errorf("%w: app %s has no redis addon", ErrNotFound, app)
	}
	return c.Addon(ctx, as[0].ID)
}

// Backups lists the backups of app's addon, newest first (GET /v1/backups).
func (c *Client) Backups(ctx context.Context, app string) ([]Backup, error) {
	var out []Backup
	return out, c.do(ctx, http.MethodGet, "/v1/backups?app="+url.QueryEscape(app), nil, &out)
}

// BackupCreate asks for a manual backup of r.App's addon (POST /v1/backups,
// 202): the record (running) and its backup operation.
func (c *Client) BackupCreate(ctx context.Context, r BackupCreateRequest) (BackupCreateResponse, error) {
	var out BackupCreateResponse
	return out, c.do(ctx, http.MethodPost, "/v1/backups", r, &out)
}

// BackupRestore restores backup id into r.App's addon (POST
// /v1/backups/{id}/restore, 202): the restore operation.
func (c *Client) BackupRestore(ctx context.Context, id string, r BackupRestoreRequest) (BackupRestoreResponse, error) {
	var out BackupRestoreResponse
	return out, c.do(ctx, http.MethodPost, "/v1/backups/"+url.PathEscape(id)+"/restore", r, &out)
}

// ReportJob reports a finished backup or restore job (agent API, POST
// /v1/agent/jobs). Reporting a job twice is harmless.
func (c *Client) ReportJob(ctx context.Context, r JobReport) error {
	return c.do(ctx, http.MethodPost, "/v1/agent/jobs", r, nil)
}

// LatestBackup is the id BackupDownload's path carries when it asks for
// the app's latest good backup.
const LatestBackup = "latest"

// BackupHeader carries, on a download's answer, the backup's record as
// base64 (standard encoding) of its JSON.
const BackupHeader = "X-Cacheplane-Backup"

// BackupDownload streams backup id of app's addon as the plaintext tar.gz
// (GET /v1/backups/{id}/download?app=APP); id "" is the app's latest good
// backup. The Backup is the record (ArchiveBytes and ArchiveChecksum say
// what the stream must add up to). The coordinator verifies the stored
// object before it sends a byte: a corrupt one is an error here, not a
// stream. The caller closes the stream; ctx bounds the whole download (no
// other timeout applies to the body).
func (c *Client) BackupDownload(ctx context.Context, app, id string) (io.ReadCloser, Backup, error) {
	if id == "" {
		id = LatestBackup
	}
	path := "/v1/backups/" + url.PathEscape(id) + "/download?app=" + url.QueryEscape(app)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, Backup{}, fmt.Errorf("build request: %w", err)
	}
	hc := &http.Client{Transport: c.hc.Transport} // no overall timeout: the body may take long
	resp, err := hc.Do(req)
	if err != nil {
		if c.socket != "" {
			var ne *net.OpError
			if errors.As(err, &ne) && ne.Op == "dial" {
				return nil, Backup{}, fmt.Errorf("%w on %s (is cacheplane-coordinator running? pass --socket or set CACHEPLANE_SOCKET): %v", ErrNoSocket, c.socket, unwrapSyscall(err))
			}
		}
		return nil, Backup{}, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb = ErrorBody{Error: fmt.Sprintf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(data))), Code: "internal"}
		}
		return nil, Backup{}, &RemoteError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	b, err := DecodeBackupHeader(resp.Header.Get(BackupHeader))
	if err != nil {
		resp.Body.Close()
		return nil, Backup{}, fmt.Errorf("GET %s: %w", path, err)
	}
	return resp.Body, b, nil
}

// EncodeBackupHeader is the value of BackupHeader for b.
func EncodeBackupHeader(b Backup) (string, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("encode backup %s: %w", b.ID, err)
	}
	return base64.StdEncoding.EncodeToString(data), nil
}

// DecodeBackupHeader reads a BackupHeader value.
func DecodeBackupHeader(v string) (Backup, error) {
	var b Backup
	if v == "" {
		return b, fmt.Errorf("the answer has no %s header", BackupHeader)
	}
	data, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return b, fmt.Errorf("decode %s header: %w", BackupHeader, err)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("decode %s header: %w", BackupHeader, err)
	}
	return b, nil
}
