package intercept

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"software.sslmate.com/src/go-pkcs12"
)

// systemCertFiles are the bundles crypto/x509 looks for on Linux, in its
// order (src/crypto/x509/root_linux.go).
var systemCertFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // OpenSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine
}

// findSystemRoots picks the bundle as crypto/x509 does on Linux:
// $SSL_CERT_FILE, else the first usual path that exists. It skips our own
// bundle.pem: a proxy started from a shell that already points
// SSL_CERT_FILE at it would otherwise fold every old CA into the new
// bundle. "" means none was found. (Certificates in SSL_CERT_DIR-style
// directories are not gathered: every image we know ships one bundle file.)
func findSystemRoots(getenv func(string) string, candidates []string, ownBundle string) string {
	if f := getenv("SSL_CERT_FILE"); f != "" && !sameFile(f, ownBundle) {
		return f
	}
	for _, f := range candidates {
		if _, err := os.Stat(f); err == nil && !sameFile(f, ownBundle) {
			return f
		}
	}
	return ""
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// writeTrustFiles writes bundle.pem, truststore.p12 and ca.crt into caDir,
// each atomically, ca.crt last: an app that starts by waiting for ca.crt
// finds the other two in place.
func writeTrustFiles(caDir string, anchor *x509.Certificate, rootsFile string, log *zap.Logger) error {
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		return fmt.Errorf("intercept: create CA dir %s: %w", caDir, err)
	}
	if rootsFile == "" {
		rootsFile = findSystemRoots(os.Getenv, systemCertFiles, filepath.Join(caDir, BundleName))
	}
	var bundle bytes.Buffer
	// truststore.p12 holds the same roots as bundle.pem: Java's
	// -Djavax.net.ssl.trustStore replaces its default store, so a store with
	// ca.crt alone would break every other HTTPS call the app makes
	// (passthrough tunnels included).
	var entries []pkcs12.TrustStoreEntry
	if rootsFile == "" {
		log.Warn("no system root bundle found; bundle.pem trusts only the interception CA, so apps that use it reach no other HTTPS site")
	} else {
		system, err := os.ReadFile(rootsFile)
		if err != nil {
			return fmt.Errorf("intercept: read system roots: %w", err)
		}
		// Only the certificates: a bundle may carry comments or
		// "TRUSTED CERTIFICATE" blocks that some clients reject.
		for rest := system; ; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			_ = pem.Encode(&bundle, &pem.Block{Type: block.Type, Bytes: block.Bytes})
			if c, err := x509.ParseCertificate(block.Bytes); err == nil {
				// Aliases must be unique in a Java key store; subjects need not be.
				entries = append(entries, pkcs12.TrustStoreEntry{Cert: c, FriendlyName: fmt.Sprintf("system-%d: %s", len(entries), c.Subject)})
			}
		}
	}
	bundle.Write(certPEM(anchor))

	entries = append(entries, pkcs12.TrustStoreEntry{Cert: anchor, FriendlyName: "dinie-auth-proxy-ca"})
	p12, err := pkcs12.Passwordless.EncodeTrustStoreEntries(entries, "")
	if err != nil {
		return fmt.Errorf("intercept: encode %s: %w", TrustStoreName, err)
	}
	if err := writeFileAtomic(caDir, BundleName, bundle.Bytes(), 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(caDir, TrustStoreName, p12, 0o644); err != nil {
		return err
	}
	return writeFileAtomic(caDir, CACertName, certPEM(anchor), 0o644)
}

// writeFileAtomic replaces dir/name so that a reader sees the old file or the
// new one, never a part: a temporary file in the same directory, synced,
// then renamed over the name, then the directory synced so the rename
// survives a crash.
func writeFileAtomic(dir, name string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("intercept: write %s: %w", filepath.Join(dir, name), err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			err = fmt.Errorf("intercept: write %s: %w", filepath.Join(dir, name), err)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
