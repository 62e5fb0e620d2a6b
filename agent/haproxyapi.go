package agent

// The HAProxy runtime API: the one place that speaks to an entrypoint
// HAProxy's admin stats socket (render puts it in the member's dir, mode
// 0600). It is a line protocol over a unix socket: in HAProxy's default
// (non-interactive) mode a connection carries one command line, which may
// hold several commands separated by "; ", and HAProxy closes the
// connection after the last answer. Commands that change something answer
// with an empty line when they succeed and with a sentence otherwise ("No
// such server.").

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// hapTimeout bounds one exchange (connect, command, full answer): HAProxy
// answers from memory, so anything slower means it is not serving.
const hapTimeout = time.Second

// hapMaxAnswer bounds what is read back (show stat of one addon is a few KB).
const hapMaxAnswer = 1 << 20

// hapAPI is one HAProxy's runtime API.
type hapAPI struct {
	socket string // path of the admin stats socket
}

// do sends one command line and returns HAProxy's whole answer.
func (h hapAPI) do(ctx context.Context, line string) (string, error) {
	return h.doSecret(ctx, strconv.Quote(line), line)
}

// doSecret is do for a command line holding a secret (a private key): its
// errors name the command by what, never by the line.
func (h hapAPI) doSecret(ctx context.Context, what, line string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, hapTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", h.socket)
	if err != nil {
		return "", fmt.Errorf("haproxy runtime API %s: %w", h.socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", fmt.Errorf("haproxy runtime API %s: %s: %w", h.socket, what, err)
	}
	b, err := io.ReadAll(io.LimitReader(c, hapMaxAnswer))
	if err != nil {
		return "", fmt.Errorf("haproxy runtime API %s: %s: %w", h.socket, what, err)
	}
	return string(b), nil
}

// exec runs commands (in order, on one connection) that answer nothing when
// they succeed; "already enabled/disabled" and the confirmations of `add
// server` and `del server` count as success.
func (h hapAPI) exec(ctx context.Context, cmds []string) error {
	if len(cmds) == 0 {
		return nil
	}
	line := strings.Join(cmds, "; ")
	out, err := h.do(ctx, line)
	if err != nil {
		return err
	}
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, "already enabled") || strings.Contains(l, "already disabled") ||
			l == "New server registered." || l == "Server deleted." {
			continue
		}
		errs = append(errs, l)
	}
	if len(errs) > 0 {
		return fmt.Errorf("haproxy runtime API %s: %q: %s", h.socket, line, strings.Join(errs, " "))
	}
	return nil
}

// hapServer is one server of a backend as HAProxy reports it.
type hapServer struct {
	Name string
	// Addr is its address, host:port (net.JoinHostPort form: the sentinels'
	// answers are compared with it).
	Addr string
	// Admin is what the operator's side says: hapReady, hapMaint
	// (maintenance: no traffic, no checks) or hapDrain (no new traffic).
	Admin string
	// Up: the server takes traffic as far as its checks go (status UP).
	Up bool
	// Sessions is its current session count.
	Sessions int
}

// Admin states.
const (
	hapReady = "ready"
	hapMaint = "maint"
	hapDrain = "drain"
)

// hapState is what routing needs to know of a running HAProxy.
type hapState struct {
	// Frontends: name → whether it accepts connections (status OPEN or
	// FULL; PAUSED and STOP are disabled).
	Frontends map[string]bool
	// Servers: backend → its servers, in the file's order.
	Servers map[string][]hapServer
}

// state reads the frontends and servers ("show stat", types 1|4).
func (h hapAPI) state(ctx context.Context) (hapState, error) {
	out, err := h.do(ctx, "show stat -1 5 -1")
	if err != nil {
		return hapState{}, err
	}
	st, err := parseShowStat(out)
	if err != nil {
		return hapState{}, fmt.Errorf("haproxy runtime API %s: show stat: %w", h.socket, err)
	}
	return st, nil
}

// parseShowStat reads "show stat" CSV (header "# pxname,svname,...").
func parseShowStat(out string) (hapState, error) {
	st := hapState{Frontends: map[string]bool{}, Servers: map[string][]hapServer{}}
	out = strings.TrimLeft(out, " \n")
	if !strings.HasPrefix(out, "# ") {
		return st, fmt.Errorf("unexpected answer %q", strings.SplitN(out, "\n", 2)[0])
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return st, fmt.Errorf("header: %w", err)
	}
	col := map[string]int{}
	for i, name := range header {
		col[name] = i
	}
	for _, name := range []string{"pxname", "svname", "scur", "status", "type", "addr"} {
		if _, ok := col[name]; !ok {
			return st, fmt.Errorf("no %s column", name)
		}
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, err
		}
		if len(rec) < len(header) {
			continue // the blank line that ends the answer
		}
		get := func(name string) string { return rec[col[name]] }
		status := get("status")
		switch get("type") {
		case "0": // frontend
			st.Frontends[get("pxname")] = status == "OPEN" || status == "FULL"
		case "2": // server
			s := hapServer{Name: get("svname"), Addr: normalAddr(get("addr")), Admin: hapReady}
			switch {
			case strings.HasPrefix(status, "MAINT"):
				s.Admin = hapMaint
			case strings.HasPrefix(status, "DRAIN"):
				s.Admin = hapDrain
			}
			s.Up = strings.HasPrefix(status, "UP") || strings.HasPrefix(status, "DRAIN") || status == "no check"
			s.Sessions, _ = strconv.Atoi(get("scur"))
			be := get("pxname")
			st.Servers[be] = append(st.Servers[be], s)
		}
	}
	return st, nil
}

// normalAddr writes HAProxy's "ip:port" ("[::1]:6379" or "::1:6379" for
// IPv6, depending on the version) as net.JoinHostPort does.
func normalAddr(a string) string {
	if h, p, err := net.SplitHostPort(a); err == nil {
		return net.JoinHostPort(h, p)
	}
	if i := strings.LastIndexByte(a, ':'); i > 0 {
		return net.JoinHostPort(a[:i], a[i+1:])
	}
	return a
}
