package intercept

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dinie/dinie-auth-proxy/internal/testkit"
	"software.sslmate.com/src/go-pkcs12"
)

// TestRootKeyNowhere: after New, no file in ca_dir or key_dir holds a
// private key for ca.crt's public key; ca_dir holds no private key at all;
// key_dir's files are 0600.
func TestRootKeyNowhere(t *testing.T) {
	d := newTestDirs(t)
	mustNew(t, d.config(nil))
	root := readCACert(t, d.ca)
	inter, _ := savedIntermediate(t, d.key)

	keysFound := 0
	for _, dir := range []string{d.ca, d.key} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			data := readFile(t, path)
			for rest := data; ; {
				var block *pem.Block
				block, rest = pem.Decode(rest)
				if block == nil {
					break
				}
				if !strings.Contains(block.Type, "PRIVATE KEY") {
					continue
				}
				if dir == d.ca {
					t.Errorf("%s holds a %s block: no key may be in the directory the app reads", path, block.Type)
				}
				key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
				if err != nil {
					key, err = x509.ParseECPrivateKey(block.Bytes)
				}
				if err != nil {
					t.Errorf("%s: unparsable %s block: %v", path, block.Type, err)
					continue
				}
				keysFound++
				pub := key.(crypto.Signer).Public()
				if pub.(*ecdsa.PublicKey).Equal(root.PublicKey) {
					t.Errorf("%s holds the root's private key", path)
				}
				if !pub.(*ecdsa.PublicKey).Equal(inter.PublicKey) {
					t.Errorf("%s holds a key that is not the intermediate's", path)
				}
			}
			if dir == d.key {
				if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
				}
			}
		}
	}
	if keysFound != 1 {
		t.Errorf("found %d private keys, want the intermediate's alone", keysFound)
	}
	// The trust store holds certificates only: DecodeTrustStore refuses a
	// key bag.
	if _, err := pkcs12.DecodeTrustStore(readFile(t, filepath.Join(d.ca, TrustStoreName)), ""); err != nil {
		t.Errorf("truststore.p12: %v", err)
	}
}

// The app reads ca_dir: key_dir may be neither it, nor inside it, nor
// around it, however the paths are written.
func TestKeyDirMustNotBeCADir(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(ca string) string
		ca   func(ca string) string
	}{
		{"same", func(ca string) string { return ca + "/." }, nil},
		{"key inside ca", func(ca string) string { return filepath.Join(ca, "keys") }, nil},
		{"key deep inside ca, not yet there", func(ca string) string { return filepath.Join(ca, "a", "..", "b", "keys") }, nil},
		{"ca inside key", func(ca string) string { return ca }, func(ca string) string { return filepath.Join(ca, "public") }},
		{"key inside ca through a link", func(ca string) string {
			link := filepath.Join(filepath.Dir(ca), "link")
			os.MkdirAll(ca, 0o755)
			os.Symlink(ca, link)
			return filepath.Join(link, "keys")
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDirs(t)
			cfg := d.config(nil)
			base := cfg.CADir
			cfg.KeyDir = tc.key(base)
			if tc.ca != nil {
				cfg.CADir = tc.ca(base)
			}
			_, err := New(cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != "intercept.key_dir" {
				t.Fatalf("New with key_dir %s, ca_dir %s: %v, want a ConfigError for intercept.key_dir", cfg.KeyDir, cfg.CADir, err)
			}
		})
	}
	// Siblings are fine, even with a common prefix in their names.
	d := newTestDirs(t)
	cfg := d.config(nil)
	cfg.KeyDir = cfg.CADir + "-keys"
	if _, err := New(cfg); err != nil {
		t.Errorf("key_dir beside ca_dir: %v", err)
	}
}

// TestRestart: with key_dir, a second start reuses the CA the app already
// trusts; anything that does not fit together makes a new one.
func TestRestart(t *testing.T) {
	var clock *fakeClock
	tests := []struct {
		name   string
		noKey  bool                           // start without key_dir
		damage func(t *testing.T, d testDirs) // between the two starts
		reuse  bool
	}{
		{name: "files intact", reuse: true},
		{name: "no key_dir", noKey: true},
		{name: "key missing", damage: func(t *testing.T, d testDirs) {
			os.Remove(filepath.Join(d.key, intermediateKeyNm))
		}},
		{name: "another key", damage: func(t *testing.T, d testDirs) {
			der, _ := x509.MarshalPKCS8PrivateKey(newKey(t))
			writeFile(t, filepath.Join(d.key, intermediateKeyNm), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
		}},
		{name: "ca.crt from another CA", damage: func(t *testing.T, d testDirs) {
			other := newTestDirs(t)
			mustNew(t, other.config(nil))
			writeFile(t, filepath.Join(d.ca, CACertName), string(readFile(t, filepath.Join(other.ca, CACertName))))
		}},
		{name: "CA a day from its end", damage: func(t *testing.T, d testDirs) {
			clock.Advance(caLifetime - 24*time.Hour)
		}},
		{name: "ca.crt missing", damage: func(t *testing.T, d testDirs) {
			os.Remove(filepath.Join(d.ca, CACertName))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDirs(t)
			clock = newFakeClock()
			cfg := d.config(clock.Now)
			if tt.noKey {
				cfg.KeyDir = ""
			}
			mustNew(t, cfg)
			first := readCACert(t, d.ca)
			if tt.damage != nil {
				tt.damage(t, d)
			}
			second := mustNew(t, cfg)
			now := readCACert(t, d.ca)
			if reused := now.Equal(first); reused != tt.reuse {
				t.Fatalf("CA reused = %v, want %v", reused, tt.reuse)
			}
			// Whatever happened, the new leaf chains to the ca.crt on disk.
			leaf := second.leaf.Load().cert
			inter, _ := x509.ParseCertificate(leaf.Certificate[1])
			if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: testHost, Roots: poolOf(now), Intermediates: poolOf(inter), CurrentTime: clock.Now()}); err != nil {
				t.Fatalf("leaf does not verify against ca.crt after restart: %v", err)
			}
		})
	}
}

// suppliedCA makes a CA as cert-manager might, with the constraints edit
// gives it, and writes it and its key as PEM files.
func suppliedCA(t *testing.T, edit func(*x509.Certificate)) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "cert-manager CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	constrain(tmpl, testHost)
	edit(tmpl)
	cert := mustCreate(t, tmpl, tmpl, &key.PublicKey, key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePEM(t, certFile, cert)
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	return certFile, keyFile
}

func TestSuppliedCA(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*x509.Certificate)
		wantErr string // "" means accepted
	}{
		{name: "constrained to the host", edit: func(*x509.Certificate) {}},
		{name: "host in another case", edit: func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"API.Dinie.com.br"} }},
		{name: "no constraints", wantErr: "permitted DNS name", edit: func(c *x509.Certificate) {
			c.PermittedDNSDomains, c.ExcludedDNSDomains, c.ExcludedIPRanges, c.PermittedDNSDomainsCritical = nil, nil, nil, false
		}},
		{name: "another host", wantErr: "permits \"dinie.com.br\"", edit: func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"dinie.com.br"} }},
		{name: "host and another", wantErr: "permits \"evil.example.com\"", edit: func(c *x509.Certificate) {
			c.PermittedDNSDomains = []string{testHost, "evil.example.com"}
		}},
		{name: "subdomains not excluded", wantErr: "excluded DNS subdomains", edit: func(c *x509.Certificate) { c.ExcludedDNSDomains = nil }},
		{name: "IPv6 not excluded", wantErr: "::/0", edit: func(c *x509.Certificate) { c.ExcludedIPRanges = c.ExcludedIPRanges[:1] }},
		{name: "only part of IPv4 excluded", wantErr: "0.0.0.0/0", edit: func(c *x509.Certificate) {
			c.ExcludedIPRanges[0] = &net.IPNet{IP: net.IPv4(10, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}
		}},
		{name: "not critical", wantErr: "critical", edit: func(c *x509.Certificate) { c.PermittedDNSDomainsCritical = false }},
		{name: "host itself excluded", wantErr: "does not verify", edit: func(c *x509.Certificate) {
			c.ExcludedDNSDomains = append(c.ExcludedDNSDomains, testHost)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile := suppliedCA(t, tt.edit)
			caDir := filepath.Join(t.TempDir(), "ca")
			a, err := New(Config{Host: testHost, CADir: caDir, CACertFile: certFile, CAKeyFile: keyFile, SystemRootsFile: os.DevNull})
			if tt.wantErr != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Key != "intercept.ca_cert_file" || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: %v, want a ConfigError for intercept.ca_cert_file saying %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "intercept.ca_cert_file: ") {
					t.Errorf("message %q does not start with the key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			written := readFile(t, filepath.Join(caDir, CACertName))
			if !bytes.Equal(written, readFile(t, certFile)) {
				t.Errorf("ca.crt is not the supplied certificate")
			}
			if _, err := a.leaf.Load().cert.Leaf.Verify(x509.VerifyOptions{DNSName: testHost, Roots: poolOf(readCACert(t, caDir))}); err != nil {
				t.Errorf("leaf does not verify against the supplied CA: %v", err)
			}
		})
	}
}

func TestSuppliedCAKeyErrors(t *testing.T) {
	certFile, keyFile := suppliedCA(t, func(*x509.Certificate) {})
	_, otherKey := suppliedCA(t, func(*x509.Certificate) {})
	for _, tt := range []struct {
		name, cert, key, wantKey string
	}{
		{"key file missing", certFile, "", "intercept.ca_key_file"},
		{"cert file missing", "", keyFile, "intercept.ca_cert_file"},
		{"key of another CA", certFile, otherKey, "intercept.ca_key_file"},
		{"unreadable cert", filepath.Join(t.TempDir(), "absent.crt"), keyFile, "intercept.ca_cert_file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Host: testHost, CACertFile: tt.cert, CAKeyFile: tt.key})
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tt.wantKey {
				t.Fatalf("New: %v, want a ConfigError for %s", err, tt.wantKey)
			}
		})
	}
}

func TestHostMustBeAName(t *testing.T) {
	d := newTestDirs(t)
	for _, h := range []string{"", "10.0.0.1", "::1", "*.dinie.com.br"} {
		cfg := d.config(nil)
		cfg.Host = h
		_, err := New(cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "upstream.url" {
			t.Errorf("New(Host %q): %v, want a ConfigError for upstream.url", h, err)
		}
	}
}

// TestLeafRenewsAtHalfLife moves a fake clock across the leaf's half-life.
func TestLeafRenewsAtHalfLife(t *testing.T) {
	clock := newFakeClock()
	d := newTestDirs(t)
	cfg := d.config(clock.Now)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	a := mustNew(t, cfg)

	first, err := a.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := first.Leaf.NotBefore, clock.Now().Add(-time.Hour); !got.Equal(want) {
		t.Errorf("NotBefore = %v, want %v", got, want)
	}
	if got, want := first.Leaf.NotAfter, clock.Now().Add(72*time.Hour); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got, want)
	}
	if got := first.Leaf.DNSNames; len(got) != 1 || got[0] != testHost || len(first.Leaf.IPAddresses) != 0 {
		t.Errorf("SANs = %v %v, want %s alone", got, first.Leaf.IPAddresses, testHost)
	}
	if _, ok := first.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("leaf key is %T, want ECDSA", first.PrivateKey)
	}
	if got := testutil.ToFloat64(a.expiry); got != float64(first.Leaf.NotAfter.Unix()) {
		t.Errorf("expiry gauge = %v, want %v", got, first.Leaf.NotAfter.Unix())
	}

	clock.Advance(36*time.Hour - time.Second)
	if c, _ := a.certificate(); c != first {
		t.Fatal("leaf renewed before half its life")
	}
	clock.Advance(time.Second)
	second, err := a.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("leaf not renewed at half its life")
	}
	if got, want := second.Leaf.NotAfter, clock.Now().Add(72*time.Hour); !got.Equal(want) {
		t.Errorf("renewed NotAfter = %v, want %v", got, want)
	}
	if got := testkit.Value(t, reg, "dinie_proxy_intercept_leaf_expiry_timestamp_seconds"); got != float64(second.Leaf.NotAfter.Unix()) {
		t.Errorf("expiry gauge = %v after renewal, want %v", got, second.Leaf.NotAfter.Unix())
	}
	if c, _ := a.certificate(); c != second {
		t.Error("leaf not cached after renewal")
	}
}

func TestSystemRoots(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, BundleName)
	env, absent, present := filepath.Join(dir, "env.pem"), filepath.Join(dir, "absent.pem"), filepath.Join(dir, "present.pem")
	for _, f := range []string{own, env, present} {
		writeFile(t, f, "")
	}
	getenv := func(v string) func(string) string {
		return func(k string) string {
			if k == "SSL_CERT_FILE" {
				return v
			}
			return ""
		}
	}
	candidates := []string{absent, present}
	for _, tt := range []struct {
		name, env  string
		candidates []string
		want       string
	}{
		{"SSL_CERT_FILE wins", env, candidates, env},
		{"first existing path", "", candidates, present},
		{"our own bundle skipped", own, candidates, present},
		{"none", "", []string{absent}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := findSystemRoots(getenv(tt.env), tt.candidates, own); got != tt.want {
				t.Errorf("findSystemRoots = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTrustFiles: bundle.pem and truststore.p12 both hold the system roots
// plus ca.crt, and keytool lists the store when a JDK is installed.
func TestTrustFiles(t *testing.T) {
	d := newTestDirs(t)
	mustNew(t, d.config(nil))
	root := readCACert(t, d.ca)

	bundle, err := parseCerts(readFile(t, filepath.Join(d.ca, BundleName)))
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle) != 2 || !bundle[0].Equal(d.systemRoot) || !bundle[1].Equal(root) {
		t.Errorf("bundle.pem holds %d certificates, want the system root then ca.crt", len(bundle))
	}
	for _, name := range []string{CACertName, BundleName, TrustStoreName} {
		if fi, err := os.Stat(filepath.Join(d.ca, name)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, mode %v, want 0644 so that the app can read it", name, err, fi.Mode().Perm())
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(d.ca, ".*")); len(leftovers) > 0 {
		t.Errorf("temporary files left in ca_dir: %v", leftovers)
	}

	p12 := filepath.Join(d.ca, TrustStoreName)
	certs, err := pkcs12.DecodeTrustStore(readFile(t, p12), "")
	if err != nil {
		t.Fatalf("DecodeTrustStore: %v", err)
	}
	if len(certs) != 2 || !certs[0].Equal(d.systemRoot) || !certs[1].Equal(root) {
		t.Fatalf("truststore.p12 holds %d certificates, want the system root then ca.crt", len(certs))
	}

	keytool, err := exec.LookPath("keytool")
	if err != nil {
		t.Skip("keytool not on PATH: Java's reading of truststore.p12 not checked")
	}
	out, err := exec.Command(keytool, "-list", "-keystore", p12, "-storetype", "PKCS12", "-storepass", "").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 entries") || !strings.Contains(string(out), "trustedCertEntry") {
		t.Fatalf("keytool -list: %v\n%s", err, out)
	}
}

// A supplied chain whose root is not constrained is refused: that root
// would become the app's ca.crt, trusted for every host.
func TestSuppliedChainMustBeConstrainedThroughout(t *testing.T) {
	rootKey, caKey := newKey(t), newKey(t)
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unconstrained root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	root := mustCreate(t, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "constrained issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	constrain(caTmpl, testHost)
	ca := mustCreate(t, caTmpl, root, &caKey.PublicKey, rootKey)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePEM(t, certFile, ca, root)
	der, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))

	caDir := filepath.Join(t.TempDir(), "ca")
	_, err = New(Config{Host: testHost, CADir: caDir, CACertFile: certFile, CAKeyFile: keyFile, SystemRootsFile: os.DevNull})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "intercept.ca_cert_file" || !strings.Contains(err.Error(), "certificate 2") {
		t.Fatalf("New: %v, want a ConfigError for intercept.ca_cert_file naming certificate 2", err)
	}
	if _, err := os.Stat(filepath.Join(caDir, CACertName)); err == nil {
		t.Error("ca.crt was written")
	}
}
