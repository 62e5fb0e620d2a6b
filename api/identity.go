package api

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Join token kinds.
const (
	TokenAgent  = "agent"
	TokenMember = "member"
)

// TokenRequest asks for a join token (POST /v1/tokens, admin socket).
type TokenRequest struct {
	// Kind is TokenAgent (hosts-token) or TokenMember (members-token).
	Kind string `json:"kind"`
	// Name, when set, is the only host (or member) id that may use it.
	Name string   `json:"name,omitempty"`
	TTL  Duration `json:"ttl"`
}

// Validate checks kind, name and TTL.
func (r *TokenRequest) Validate() error {
	if r.Kind != TokenAgent && r.Kind != TokenMember {
		return Invalidf("token kind %q: want %s or %s", r.Kind, TokenAgent, TokenMember)
	}
	if r.Name != "" {
		if err := ValidateMemberID("host", r.Name); err != nil {
			return err
		}
	}
	if r.TTL <= 0 || time.Duration(r.TTL) > 7*24*time.Hour {
		return Invalidf("token ttl %s: want more than 0 and at most 168h", time.Duration(r.TTL))
	}
	return nil
}

// TokenResponse is a new join token: its text is shown once.
type TokenResponse struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	Name    string    `json:"name,omitempty"`
	Expires time.Time `json:"expires"`
	CAHash  string    `json:"ca_hash"`
}

// JoinIdentityRequest is a newcomer's request for its certificate (POST
// /v1/join, no client certificate): a join token's id and secret, the
// kind and name it wants, and a certificate request for its own key.
type JoinIdentityRequest struct {
	TokenID string `json:"token_id"`
	Secret  string `json:"secret"`
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	CSR     string `json:"csr"`
}

// Validate checks the fields' shapes.
func (r *JoinIdentityRequest) Validate() error {
	if r.TokenID == "" || r.Secret == "" {
		return Invalidf("join token is missing")
	}
	if r.Kind != TokenAgent && r.Kind != TokenMember {
		return Invalidf("kind %q: want %s or %s", r.Kind, TokenAgent, TokenMember)
	}
	if r.CSR == "" {
		return Invalidf("certificate request is missing")
	}
	return ValidateMemberID("host", r.Name)
}

// RenewRequest asks for a new certificate with the current one (POST
// /v1/agent/renew).
type RenewRequest struct {
	CSR string `json:"csr"`
}

// IdentityResponse is a signed certificate and the CA (PEM both).
type IdentityResponse struct {
	Cert string `json:"cert"`
	CA   string `json:"ca"`
}

// SecureResponse answers cluster-secure.
type SecureResponse struct {
	CAHash  string `json:"ca_hash"`
	Created bool   `json:"created"`
	Message string `json:"message"`
}

// NewTLSPeerClient returns a client for a coordinator's peer API at
// host:port over TLS with cfg (mutual: see identity.Holder.ClientConfig).
// It speaks HTTP/2 where the coordinator offers it, so an agent's
// assignments watch and its heartbeats share one connection (a ping after
// 15 s without a frame finds a dead one); HTTP/1.1 with a release that
// does not.
func NewTLSPeerClient(addr string, cfg *tls.Config) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   true,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second},
	}
	return &Client{base: "https://" + addr, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}, RetryFor: 15 * time.Second}
}

// Token creates a join token (admin socket).
func (c *Client) Token(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	var out TokenResponse
	return out, c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
}

// JoinIdentity asks for a certificate with a join token (peer API, no
// client certificate).
func (c *Client) JoinIdentity(ctx context.Context, req JoinIdentityRequest) (IdentityResponse, error) {
	var out IdentityResponse
	return out, c.do(ctx, http.MethodPost, "/v1/join", req, &out)
}

// Renew asks for a new certificate (agent API, with the current one).
func (c *Client) Renew(ctx context.Context, req RenewRequest) (IdentityResponse, error) {
	var out IdentityResponse
	return out, c.do(ctx, http.MethodPost, "/v1/agent/renew", req, &out)
}

// HostRemove forgets a host and revokes its certificate (admin socket).
func (c *Client) HostRemove(ctx context.Context, id string) (string, error) {
	var out map[string]string
	err := c.do(ctx, http.MethodDelete, "/v1/hosts/"+url.PathEscape(id), nil, &out)
	return out["message"], err
}

// ClusterSecure makes sure the cluster has its CA (admin socket).
func (c *Client) ClusterSecure(ctx context.Context) (SecureResponse, error) {
	var out SecureResponse
	return out, c.do(ctx, http.MethodPost, "/v1/cluster/secure", nil, &out)
}
