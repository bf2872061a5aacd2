package intercept

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// forgery is a certificate a thief of the intermediate's key might sign.
type forgery struct {
	name string
	// dnsName is what a client would check; "" checks the chain alone.
	dnsName string
	dns     []string
	ips     []net.IP
	// viaSubCA signs the leaf through a CA the thief made, without
	// constraints, to try to step outside the intermediate's.
	viaSubCA bool
}

var forgeries = []forgery{
	{name: "other host", dnsName: "evil.example.com", dns: []string{"evil.example.com"}},
	{name: "IPv4 SAN", dnsName: "127.0.0.1", ips: []net.IP{net.ParseIP("127.0.0.1")}},
	{name: "IPv6 SAN", dnsName: "::1", ips: []net.IP{net.ParseIP("::1")}},
	{name: "subdomain", dnsName: "x.api.dinie.com.br", dns: []string{"x.api.dinie.com.br"}},
	{name: "host plus another", dnsName: testHost, dns: []string{testHost, "evil.example.com"}},
	{name: "host plus an IP", dnsName: testHost, dns: []string{testHost}, ips: []net.IP{net.ParseIP("10.0.0.1")}},
	{name: "unconstrained sub-CA", dnsName: "evil.example.com", dns: []string{"evil.example.com"}, viaSubCA: true},
}

// forge signs f with the stolen intermediate and returns the leaf and the
// certificates between it and ca.crt.
func forge(t *testing.T, f forgery, inter *x509.Certificate, interKey crypto.Signer) (*x509.Certificate, []*x509.Certificate) {
	t.Helper()
	parent, parentKey, chain := inter, interKey, []*x509.Certificate{inter}
	if f.viaSubCA {
		subKey := newKey(t)
		sub := mustCreate(t, &x509.Certificate{
			SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "thief's CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}, inter, &subKey.PublicKey, interKey)
		parent, parentKey, chain = sub, subKey, []*x509.Certificate{sub, inter}
	}
	tmpl := leafTemplate(f.dns, f.ips)
	if f.dns == nil && f.ips == nil {
		tmpl.Subject.CommonName = "evil.example.com"
	}
	leafKey := newKey(t)
	return mustCreate(t, tmpl, parent, &leafKey.PublicKey, parentKey), chain
}

// TestForgedLeavesRefusedByGo is the constraint proof: with the
// intermediate's key, as a thief of key_dir would hold it, sign leaves for
// other names; Go's verifier, trusting only ca.crt, refuses every one, while
// the proxy's own leaf verifies.
func TestForgedLeavesRefusedByGo(t *testing.T) {
	d := newTestDirs(t)
	a := mustNew(t, d.config(nil))
	root := readCACert(t, d.ca)
	inter, interKey := savedIntermediate(t, d.key)

	real := a.leaf.Load().cert.Leaf
	if _, err := real.Verify(x509.VerifyOptions{DNSName: testHost, Roots: poolOf(root), Intermediates: poolOf(inter)}); err != nil {
		t.Fatalf("the proxy's own leaf does not verify: %v", err)
	}

	for _, f := range forgeries {
		t.Run(f.name, func(t *testing.T) {
			leaf, chain := forge(t, f, inter, interKey)

			// Once with the name a client would check, once with none: the
			// chain itself must be refused, not only the host name.
			for _, dnsName := range []string{f.dnsName, ""} {
				_, err := leaf.Verify(x509.VerifyOptions{DNSName: dnsName, Roots: poolOf(root), Intermediates: poolOf(chain...)})
				var invalid x509.CertificateInvalidError
				if !errors.As(err, &invalid) || (invalid.Reason != x509.CANotAuthorizedForThisName && invalid.Reason != x509.TooManyIntermediates) {
					t.Errorf("Verify(DNSName %q) = %v, want refused by the name constraints or the path length", dnsName, err)
				}
			}
		})
	}
}

// TestForgedLeavesRefusedByOpenSSL repeats the proof with openssl verify,
// the verifier behind curl, Python and Node.
func TestForgedLeavesRefusedByOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: the OpenSSL half of the constraint proof did not run (.ci/run installs Debian's openssl)")
	}
	d := newTestDirs(t)
	a := mustNew(t, d.config(nil))
	inter, interKey := savedIntermediate(t, d.key)
	dir := t.TempDir()
	caFile := filepath.Join(d.ca, CACertName)

	verify := func(t *testing.T, leaf *x509.Certificate, chain ...*x509.Certificate) (string, error) {
		t.Helper()
		leafFile, chainFile := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "intermediate.pem")
		writePEM(t, leafFile, leaf)
		writePEM(t, chainFile, chain...)
		out, err := exec.Command(openssl, "verify", "-CAfile", caFile, "-untrusted", chainFile, leafFile).CombinedOutput()
		return string(out), err
	}

	if out, err := verify(t, a.leaf.Load().cert.Leaf, inter); err != nil {
		t.Fatalf("openssl verify refuses the proxy's own leaf: %v\n%s", err, out)
	}

	cases := append(forgeries, forgery{name: "no SAN, other host as CN", dns: nil})
	for _, f := range cases {
		t.Run(f.name, func(t *testing.T) {
			leaf, chain := forge(t, f, inter, interKey)
			out, err := verify(t, leaf, chain...)
			if err == nil {
				t.Fatalf("openssl verify accepted a forged leaf:\n%s", out)
			}
			if !strings.Contains(out, "subtree violation") && !strings.Contains(out, "path length constraint exceeded") {
				t.Errorf("openssl verify refused for another reason than the constraints:\n%s", out)
			}
		})
	}
}
