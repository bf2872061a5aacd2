package intercept

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const testHost = "api.dinie.com.br"

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testDirs are a CA dir, a key dir and a stand-in for the system bundle.
type testDirs struct {
	ca, key, systemRoots string
	systemRoot           *x509.Certificate
}

func newTestDirs(t testing.TB) testDirs {
	t.Helper()
	base := t.TempDir()
	d := testDirs{ca: filepath.Join(base, "ca"), key: filepath.Join(base, "key"), systemRoots: filepath.Join(base, "system.pem")}
	// One unrelated self-signed root, standing for the public ones.
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Stand-in Public Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	d.systemRoot = mustCreate(t, tmpl, tmpl, &key.PublicKey, key)
	writeFile(t, d.systemRoots, "# a comment line, as in Debian's bundle\n"+string(certPEM(d.systemRoot)))
	return d
}

func (d testDirs) config(now func() time.Time) Config {
	return Config{Host: testHost, CADir: d.ca, KeyDir: d.key, SystemRootsFile: d.systemRoots, Now: now}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCreate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustNew(t testing.TB, cfg Config) *Authority {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

// savedIntermediate is what a thief of key_dir would hold.
func savedIntermediate(t testing.TB, keyDir string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	pair, err := tls.X509KeyPair(readFile(t, filepath.Join(keyDir, intermediateCertNm)), readFile(t, filepath.Join(keyDir, intermediateKeyNm)))
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf, pair.PrivateKey.(crypto.Signer)
}

func readCACert(t testing.TB, caDir string) *x509.Certificate {
	t.Helper()
	certs, err := parseCerts(readFile(t, filepath.Join(caDir, CACertName)))
	if err != nil || len(certs) != 1 {
		t.Fatalf("ca.crt: %d certificates, %v", len(certs), err)
	}
	return certs[0]
}

func leafTemplate(dns []string, ips []net.IP) *x509.Certificate {
	cn := ""
	if len(dns) > 0 {
		cn = dns[0]
	}
	return &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func writePEM(t testing.TB, path string, certs ...*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	writeFile(t, path, string(b))
}
