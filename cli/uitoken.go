package cli

import (
	bytespkg "bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/dashboard"
)

func uiTokenCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "ui-token [--ttl 12h]",
		Short: "Issue a one-time login token for this coordinator's web dashboard",
		Long: `Issue a one-time login token for the web dashboard of the coordinator
whose admin socket this command reaches. The token opens one session, which
ends when the token would have expired (--ttl), at logout, or when that
coordinator restarts. The dashboard listens on loopback by default: from
your machine, tunnel to it (ssh -L 7480:127.0.0.1:7480 HOST) and open
http://127.0.0.1:7480/login.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			res, err := requestUIToken(ctx, g.socketPath(), ttl)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Login token (valid until %s, one login):\n\n  %s\n\n", res.Expires.Local().Format(time.RFC1123), res.Token)
			fmt.Fprintf(w, "The dashboard listens on %s. From your machine:\n  ssh -L 7480:%s HOST   then open http://127.0.0.1:7480/login\n", res.Listen, res.Listen)
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", dashboard.DefaultTTL, "how long the token, and the session it opens, stay valid")
	return cmd
}

// requestUIToken asks the coordinator on the admin socket for a login token.
func requestUIToken(ctx context.Context, socket string, ttl time.Duration) (dashboard.TokenResponse, error) {
	var out dashboard.TokenResponse
	body, err := json.Marshal(dashboard.TokenRequest{TTL: api.Duration(ttl)})
	if err != nil {
		return out, fmt.Errorf("encode request: %w", err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://cacheplane"+dashboard.TokenPath, bytespkg.NewReader(body))
	if err != nil {
		return out, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return out, fmt.Errorf("%w on %s (is cacheplane-coordinator running? pass --socket or set CACHEPLANE_SOCKET): %v", api.ErrNoSocket, socket, ne.Err)
		}
		return out, fmt.Errorf("ui-token: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out, fmt.Errorf("ui-token: read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var eb api.ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb = api.ErrorBody{Error: fmt.Sprintf("ui-token: %s", resp.Status), Code: "internal"}
		}
		return out, &api.RemoteError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return out, fmt.Errorf("ui-token: decode answer: %w", err)
	}
	return out, nil
}
