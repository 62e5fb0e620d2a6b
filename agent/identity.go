package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// identityDirName holds the agent's key, certificate and the cluster CA
// (each 0600) under the data dir.
const identityDirName = "identity"

func (a *Agent) identityDir() string { return filepath.Join(a.cfg.DataDir, identityDirName) }

// ErrJoinRefused: a coordinator refused the join token (used, expired,
// unknown, for another host). The agent exits with it.
var ErrJoinRefused = errors.New("join refused")

// ensureIdentity puts the agent's certificate in use: the one in the
// identity dir, else one obtained with the join token. Without either, or
// when the token is refused, it returns an error (the agent exits).
func (a *Agent) ensureIdentity(ctx context.Context) error {
	key, cert, ca, err := identity.Load(a.identityDir())
	if err == nil {
		cur, err := identity.Parse(key, cert, ca)
		if err != nil {
			return fmt.Errorf("agent identity in %s: %w", a.identityDir(), err)
		}
		if cur.Peer.Kind != identity.KindAgent || cur.Peer.Name != a.cfg.HostID {
			return fmt.Errorf("agent identity in %s is %s's, not host %s's", a.identityDir(), cur.Peer, a.cfg.HostID)
		}
		a.holder.Set(cur)
		return nil
	}
	if !errors.Is(err, identity.ErrNoIdentity) {
		return err
	}
	if a.cfg.JoinToken == "" {
		return fmt.Errorf("agent: host %s has no certificate yet (%s is empty): start it once with --join-token TOKEN (on a coordinator: cacheplane hosts-token %s)",
			a.cfg.HostID, a.identityDir(), a.cfg.HostID)
	}
	tok, err := identity.ParseToken(a.cfg.JoinToken)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	key, csr, err := identity.NewKey(a.cfg.HostID)
	if err != nil {
		return err
	}
	req := api.JoinIdentityRequest{TokenID: tok.ID, Secret: tok.Secret, Kind: api.TokenAgent, Name: a.cfg.HostID, CSR: csr}
	backoff := 200 * time.Millisecond
	var got api.IdentityResponse
	for {
		var last error
		for _, addr := range a.cfg.Coordinators {
			var caCert *x509.Certificate
			cl := api.NewTLSPeerClient(addr, identity.FirstContactConfig(tok.CAHash, &caCert))
			cl.RetryFor = clientRetryFor
			jctx, cancel := context.WithTimeout(ctx, registerTimeout)
			got, last = cl.JoinIdentity(jctx, req)
			cancel()
			cl.Close()
			if last == nil {
				break
			}
			var re *api.RemoteError
			if errors.As(last, &re) && !errors.Is(last, api.ErrNoLeader) && !errors.Is(last, api.ErrNotLeader) {
				return fmt.Errorf("%w: coordinator %s: %v", ErrJoinRefused, addr, last)
			}
			a.log.Warn("join: coordinator did not answer", "coordinator", addr, "err", last)
		}
		if last == nil {
			break
		}
		if !sleep(ctx, backoff) {
			return fmt.Errorf("agent: join: %w (last: %v)", ctx.Err(), last)
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	cur, err := identity.Parse(key, got.Cert, got.CA)
	if err != nil {
		return err
	}
	if cur.CAHash != tok.CAHash {
		return fmt.Errorf("%w: the coordinator signed with another CA than the token names", ErrJoinRefused)
	}
	if err := identity.Save(a.identityDir(), key, got.Cert, got.CA); err != nil {
		return err
	}
	a.holder.Set(cur)
	a.log.Info("joined the fleet: certificate received", "serial", identity.SerialOf(cur.Leaf), "not_after", cur.Leaf.NotAfter, "ca", cur.CAHash)
	return nil
}

// renewLoop renews the certificate once two thirds of its life have
// passed, with the current one, without a restart.
func (a *Agent) renewLoop(ctx context.Context) {
	for {
		cur := a.holder.Get()
		life := cur.Leaf.NotAfter.Sub(cur.Leaf.NotBefore)
		check := min(max(life/20, time.Second), time.Minute)
		if identity.RenewDue(cur.Leaf.NotBefore, cur.Leaf.NotAfter, time.Now()) {
			if err := a.renew(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				a.log.Warn("certificate renewal failed; retrying", "err", err, "not_after", cur.Leaf.NotAfter)
			}
		}
		if !sleep(ctx, check) {
			return
		}
	}
}

func (a *Agent) renew(ctx context.Context) error {
	key, csr, err := identity.NewKey(a.cfg.HostID)
	if err != nil {
		return err
	}
	var got api.IdentityResponse
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	if err := a.coord.call(rctx, func(cl *api.Client) error {
		var err error
		got, err = cl.Renew(rctx, api.RenewRequest{CSR: csr})
		return err
	}); err != nil {
		return err
	}
	cur, err := identity.Parse(key, got.Cert, got.CA)
	if err != nil {
		return err
	}
	if err := identity.Save(a.identityDir(), key, got.Cert, got.CA); err != nil {
		return err
	}
	a.holder.Set(cur)
	// Connections made with the old certificate would be refused now.
	a.coord.reconnect()
	a.log.Info("certificate renewed", "serial", identity.SerialOf(cur.Leaf), "not_after", cur.Leaf.NotAfter)
	return nil
}
