package agent

// How clients reach an addon's entrypoint beyond plaintext on the private
// network (render.HAProxyAccess): TLS beside plaintext, force TLS and
// internet access. The agent writes the files HAProxy reads at start (the
// addon's certificate and key, the switches file) and applies changes to a
// running HAProxy through its runtime API, so a renewed certificate, a
// force-TLS switch or an internet-access switch restarts nothing and cuts
// no session:
//
//   - the certificate: `set ssl cert FILE <<PEM` then `commit ssl cert
//     FILE` when the serial HAProxy serves (`show ssl cert FILE`) is not
//     the assignment's; new handshakes use it, established sessions keep
//     theirs;
//   - the switches: `add acl FILE force-tls|internet` / `del acl ...`, so
//     the frontends' ACLs see the new value on the next connection;
//   - the public frontend: `enable frontend` / `disable frontend` (a
//     disabled frontend releases its port: off means nothing listens on
//     the public address).
//
// Before an addon has its certificate (the leader issues it within seconds
// of the placement; an older coordinator never does) HAProxy starts with a
// self-signed placeholder made here, which no client trusts, and the
// assignment's certificate replaces it at run time once it arrives.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// Files of a haproxy member's dir for its access.
const (
	tlsPEMName    = "tls.pem"
	tlsSocketName = "tls.sock"
	switchesName  = "switches.lst"
)

// haproxyAccess is the access part of a haproxy member's config: files in
// its dir, and this host's public address with the entrypoint's port.
func (a *Agent) haproxyAccess(memberID string, port int) *render.HAProxyAccess {
	dir := a.memberDir(memberID)
	acc := &render.HAProxyAccess{
		CertFile: filepath.Join(dir, tlsPEMName),
		Socket:   filepath.Join(dir, tlsSocketName),
		Switches: filepath.Join(dir, switchesName),
	}
	if a.cfg.PublicAddress != "" {
		acc.Public = render.Endpoint{Addr: a.cfg.PublicAddress, Port: port}
	}
	return acc
}

// wantSwitches is the switches an addon's settings turn on, in file order.
func wantSwitches(s api.Settings) []string {
	var out []string
	if s.ForceTLS {
		out = append(out, render.SwitchForceTLS)
	}
	if s.InternetAccess {
		out = append(out, render.SwitchInternet)
	}
	return out
}

// switchesFile is the switches file's content.
func switchesFile(s api.Settings) string {
	var b strings.Builder
	for _, sw := range wantSwitches(s) {
		b.WriteString(sw + "\n")
	}
	return b.String()
}

// assignedPEM is the certificate-and-key file of an assignment's
// certificate; empty when it has none.
func assignedPEM(as api.Assignment) string {
	if as.TLSCert == "" || as.TLSKey.IsZero() {
		return ""
	}
	return strings.TrimRight(as.TLSCert, "\n") + "\n" + strings.TrimRight(as.TLSKey.Reveal(), "\n") + "\n"
}

// writeAccessFiles writes a haproxy member's certificate file (the
// assignment's, or a placeholder when it has none and the file is
// missing) and switches file, mode 0600, when they changed.
func writeAccessFiles(acc *render.HAProxyAccess, as api.Assignment) error {
	if err := os.MkdirAll(filepath.Dir(acc.CertFile), 0o700); err != nil {
		return fmt.Errorf("member dir: %w", err)
	}
	if pemText := assignedPEM(as); pemText != "" {
		if err := writeFileIfChanged(acc.CertFile, []byte(pemText)); err != nil {
			return fmt.Errorf("write certificate file: %w", err)
		}
	} else if _, err := os.Stat(acc.CertFile); errors.Is(err, os.ErrNotExist) {
		ph, err := placeholderPEM(as.AddonID)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(acc.CertFile, []byte(ph)); err != nil {
			return fmt.Errorf("write placeholder certificate file: %w", err)
		}
	}
	if err := writeFileIfChanged(acc.Switches, []byte(switchesFile(as.Settings))); err != nil {
		return fmt.Errorf("write switches file: %w", err)
	}
	return nil
}

// placeholderPEM is a self-signed certificate and key that HAProxy can
// start with before the addon's certificate arrives.
func placeholderPEM(addonID string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("placeholder key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: addonID + " (no certificate yet)"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", fmt.Errorf("placeholder certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("placeholder key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), nil
}

// syncAccess brings a running HAProxy's access onto its assignment: files
// first (a restart starts from them), then the runtime API.
// Member TLS files and a renewed certificate are synced here too
// (membertls.go).
func (a *Agent) syncAccess(ctx context.Context, p memberPlan) error {
	if err := a.syncMemberTLS(ctx, p); err != nil {
		return err
	}
	if p.access == nil {
		return nil
	}
	if err := writeAccessFiles(p.access, p.as); err != nil {
		return err
	}
	h := hapAPI{socket: a.hapSocketPath(p.as.MemberID)}
	if err := syncSwitches(ctx, h, p.access.Switches, wantSwitches(p.as.Settings)); err != nil {
		return err
	}
	if !p.access.Public.IsZero() {
		cmd := "disable frontend " + render.HAProxyPublicFrontend(p.as.AddonID)
		if p.as.Settings.InternetAccess {
			cmd = "enable frontend " + render.HAProxyPublicFrontend(p.as.AddonID)
		}
		if err := h.exec(ctx, []string{cmd}); err != nil {
			return err
		}
	}
	if pemText := assignedPEM(p.as); pemText != "" {
		if err := syncCert(ctx, h, p.access.CertFile, p.as.TLSCert, pemText); err != nil {
			return err
		}
	}
	return nil
}

// syncSwitches makes the pattern file's entries in HAProxy's memory the
// wanted ones.
func syncSwitches(ctx context.Context, h hapAPI, file string, want []string) error {
	out, err := h.do(ctx, "show acl "+file)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		// "0x55d0c0a1b2c0 force-tls"
		if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[0], "0x") {
			have[f[1]] = true
		}
	}
	var cmds []string
	for _, sw := range []string{render.SwitchForceTLS, render.SwitchInternet} {
		on := false
		for _, w := range want {
			on = on || w == sw
		}
		switch {
		case on && !have[sw]:
			cmds = append(cmds, "add acl "+file+" "+sw)
		case !on && have[sw]:
			cmds = append(cmds, "del acl "+file+" "+sw)
		}
	}
	return h.exec(ctx, cmds)
}

// syncCert replaces the certificate HAProxy serves when its serial is not
// the assigned one's.
func syncCert(ctx context.Context, h hapAPI, file, certPEM, pemText string) error {
	c, err := identity.ParseCertPEM([]byte(certPEM))
	if err != nil {
		return fmt.Errorf("assigned certificate: %w", err)
	}
	want := strings.ToUpper(c.SerialNumber.Text(16))
	out, err := h.do(ctx, "show ssl cert "+file)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(l, "Serial: "); ok && strings.TrimLeft(strings.TrimSpace(s), "0") == strings.TrimLeft(want, "0") {
			return nil
		}
	}
	// The payload form: the command line ends with "<<", the PEM
	// follows, an empty line ends it. The payload holds the key: sent by
	// doSecret, whose errors never repeat it.
	out, err = h.doSecret(ctx, "set ssl cert "+file, "set ssl cert "+file+" <<\n"+pemText)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Transaction created") && !strings.Contains(out, "Transaction updated") {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return fmt.Errorf("haproxy set ssl cert %s: %s", file, first)
	}
	out, err = h.do(ctx, "commit ssl cert "+file)
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Success!") {
		return fmt.Errorf("haproxy commit ssl cert %s: %s", file, strings.TrimSpace(out))
	}
	return nil
}
