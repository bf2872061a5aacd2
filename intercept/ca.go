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
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// constrain gives a CA template the name constraints that confine it to
// host. RFC 5280 lets a permitted dNSName also match every subdomain, so the
// subdomains are excluded with the leading-dot form, which Go, OpenSSL and
// Java read as "strict subdomains only" (the host itself stays permitted).
// Excluding every IPv4 and IPv6 address matters because a DNS constraint
// says nothing about IP SANs: without it the CA could sign for any address.
func constrain(tmpl *x509.Certificate, host string) {
	tmpl.PermittedDNSDomainsCritical = true
	tmpl.PermittedDNSDomains = []string{host}
	tmpl.ExcludedDNSDomains = []string{"." + host}
	tmpl.ExcludedIPRanges = []*net.IPNet{
		{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
		{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
	}
}

// checkConstraints says why cert could sign for a name other than host, or
// nil: its name constraints must be critical, permit DNS host and nothing
// else, exclude host's subdomains and every IPv4 and IPv6 address. Other
// name types (e-mail, URI) play no part in a TLS server's identity.
func checkConstraints(cert *x509.Certificate, host string) error {
	var missing []string
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return errors.New("the certificate is not a CA")
	}
	if len(cert.PermittedDNSDomains) == 0 {
		missing = append(missing, fmt.Sprintf("permitted DNS name %s", host))
	}
	for _, d := range cert.PermittedDNSDomains {
		if !strings.EqualFold(d, host) {
			missing = append(missing, fmt.Sprintf("permitted DNS names only %s (it permits %q)", host, d))
			break
		}
	}
	if len(cert.PermittedDNSDomains) > 0 && !cert.PermittedDNSDomainsCritical {
		missing = append(missing, "name constraints marked critical")
	}
	if !slices.ContainsFunc(cert.ExcludedDNSDomains, func(d string) bool { return strings.EqualFold(d, "."+host) }) {
		missing = append(missing, fmt.Sprintf("excluded DNS subdomains .%s", host))
	}
	if !excludesAll(cert.ExcludedIPRanges, 32) {
		missing = append(missing, "excluded IP range 0.0.0.0/0")
	}
	if !excludesAll(cert.ExcludedIPRanges, 128) {
		missing = append(missing, "excluded IP range ::/0")
	}
	if len(missing) > 0 {
		return fmt.Errorf("CA %q must be name-constrained to %s alone; it lacks: %s",
			cert.Subject.String(), host, strings.Join(missing, "; "))
	}
	return nil
}

func excludesAll(ranges []*net.IPNet, bits int) bool {
	return slices.ContainsFunc(ranges, func(n *net.IPNet) bool {
		ones, b := n.Mask.Size()
		return ones == 0 && b == bits && len(n.IP) == bits/8
	})
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("intercept: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

// createCA makes the root and the intermediate. The root's key is a local
// variable of this function: nothing keeps it once it returns, and it is
// never encoded. (Go gives no way to scrub the memory; the garbage collector
// reclaims it.)
func createCA(host string, now time.Time) (root, inter *x509.Certificate, interKey *ecdsa.PrivateKey, err error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("intercept: generate root key: %w", err)
	}
	interKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("intercept: generate intermediate key: %w", err)
	}
	stamp := now.UTC().Format("2006-01-02T15:04:05Z")
	newCA := func(cn string, pathLen int, pub, signerKey any, parent *x509.Certificate) (*x509.Certificate, error) {
		sn, err := serialNumber()
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: sn,
			Subject: pkix.Name{
				Organization: []string{"dinie-auth-proxy"},
				CommonName:   cn + " for " + host + " " + stamp,
			},
			NotBefore:             now.Add(-leafBackdate),
			NotAfter:              now.Add(caLifetime),
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLen:            pathLen,
			MaxPathLenZero:        pathLen == 0,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			// Server authentication only: Go and OpenSSL then refuse a
			// client or code-signing certificate below it.
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		constrain(tmpl, host)
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signerKey)
		if err != nil {
			return nil, fmt.Errorf("intercept: sign %s: %w", cn, err)
		}
		return x509.ParseCertificate(der)
	}
	root, err = newCA("dinie-auth-proxy interception root", 1, &rootKey.PublicKey, rootKey, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	inter, err = newCA("dinie-auth-proxy interception CA", 0, &interKey.PublicKey, rootKey, root)
	if err != nil {
		return nil, nil, nil, err
	}
	return root, inter, interKey, nil
}

// loadOrCreate reuses the CA saved by a previous run when keyDir holds an
// intermediate that caDir's ca.crt signed, with the right constraints and
// life left; anything else creates a new CA (and saves it when keyDir is
// set). It returns the root, to be written as ca.crt.
func (a *Authority) loadOrCreate(caDir, keyDir string) (*x509.Certificate, error) {
	if keyDir != "" {
		if err := checkKeyDir(caDir, keyDir); err != nil {
			return nil, err
		}
		root, inter, key, err := loadSaved(caDir, keyDir, a.host, a.now())
		if err == nil {
			a.issuer, a.issuerKey, a.chain = inter, key, [][]byte{inter.Raw}
			a.log.Info("interception CA reused", zap.String("key_dir", keyDir))
			return root, nil
		}
		if errors.Is(err, errNoSavedCA) {
			a.log.Info("no saved interception CA; creating one", zap.String("key_dir", keyDir))
		} else {
			a.log.Warn("saved interception CA not reusable; creating a new one (apps must load the new ca.crt)",
				zap.String("key_dir", keyDir), zap.Error(err))
		}
	}
	root, inter, key, err := createCA(a.host, a.now())
	if err != nil {
		return nil, err
	}
	if keyDir != "" {
		if err := saveIntermediate(keyDir, inter, key); err != nil {
			return nil, err
		}
	}
	a.issuer, a.issuerKey, a.chain = inter, key, [][]byte{inter.Raw}
	return root, nil
}

// checkKeyDir keeps the key out of the directory the app reads: key_dir
// must be neither ca_dir, nor inside it (the app would read the key), nor
// around it (the app would need to read key_dir to reach ca_dir).
func checkKeyDir(caDir, keyDir string) error {
	ca, err1 := resolveDir(caDir)
	key, err2 := resolveDir(keyDir)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("intercept: resolve directories: %w", err)
	}
	same := ca == key
	if !same {
		fa, errA := os.Stat(ca)
		fk, errK := os.Stat(key)
		same = errA == nil && errK == nil && os.SameFile(fa, fk)
	}
	switch {
	case same:
		return configErr("intercept.key_dir", "must not be intercept.ca_dir (%s): the app reads that directory, and the key must stay with the proxy", caDir)
	case within(key, ca):
		return configErr("intercept.key_dir", "must not be inside intercept.ca_dir (%s): the app reads that directory, and the key must stay with the proxy", caDir)
	case within(ca, key):
		return configErr("intercept.key_dir", "must not hold intercept.ca_dir (%s): the app reads that directory, and would then reach the key's", caDir)
	}
	return nil
}

// resolveDir is dir made absolute, its symbolic links followed as far as
// it exists: a link must not hide one directory inside the other.
func resolveDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	var rest []string
	for p := abs; ; p = filepath.Dir(p) {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if filepath.Dir(p) == p {
			return abs, nil
		}
		rest = append([]string{filepath.Base(p)}, rest...)
	}
}

// within reports whether dir is below parent.
func within(dir, parent string) bool {
	rel, err := filepath.Rel(parent, dir)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func loadSaved(caDir, keyDir, host string, now time.Time) (root, inter *x509.Certificate, key crypto.Signer, err error) {
	read := func(dir, name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errNoSavedCA
		}
		return b, err
	}
	rootPEM, err1 := read(caDir, CACertName)
	interPEM, err2 := read(keyDir, intermediateCertNm)
	keyPEM, err3 := read(keyDir, intermediateKeyNm)
	if err := errors.Join(err1, err2, err3); err != nil {
		if errors.Is(err, errNoSavedCA) {
			return nil, nil, nil, errNoSavedCA
		}
		return nil, nil, nil, err
	}
	roots, err := parseCerts(rootPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", CACertName, err)
	}
	if len(roots) != 1 {
		return nil, nil, nil, fmt.Errorf("%s: %d certificates, want one", CACertName, len(roots))
	}
	root = roots[0]
	pair, err := tls.X509KeyPair(interPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("intermediate certificate and key: %w", err)
	}
	inter = pair.Leaf
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, nil, nil, fmt.Errorf("intermediate not signed by %s: %w", CACertName, err)
	}
	for _, c := range []*x509.Certificate{root, inter} {
		if err := checkConstraints(c, host); err != nil {
			return nil, nil, nil, err
		}
		if now.Before(c.NotBefore) || now.Add(leafLifetime).After(c.NotAfter) {
			return nil, nil, nil, fmt.Errorf("CA %q valid from %s to %s, not long enough from now", c.Subject.CommonName, c.NotBefore, c.NotAfter)
		}
	}
	if !inter.MaxPathLenZero {
		return nil, nil, nil, errors.New("intermediate may sign CAs (path length not 0)")
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, nil, nil, errors.New("intermediate key cannot sign")
	}
	return root, inter, signer, nil
}

// saveIntermediate writes the key, then its certificate, both mode 0600.
func saveIntermediate(keyDir string, inter *x509.Certificate, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return fmt.Errorf("intercept: create key dir %s: %w", keyDir, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("intercept: encode intermediate key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(keyDir, intermediateKeyNm, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(keyDir, intermediateCertNm, certPEM(inter), 0o600)
}

// loadSupplied reads a CA given by intercept.ca_cert_file and
// intercept.ca_key_file and checks that it can sign for the host alone. It
// returns the last certificate of the file, the one apps trust.
func (a *Authority) loadSupplied(certFile, keyFile string) (*x509.Certificate, error) {
	const certKey, keyKey = "intercept.ca_cert_file", "intercept.ca_key_file"
	if certFile == "" {
		return nil, configErr(certKey, "required with %s", keyKey)
	}
	if keyFile == "" {
		return nil, configErr(keyKey, "required with %s", certKey)
	}
	certPEMBytes, err := os.ReadFile(certFile)
	if err != nil {
		return nil, &ConfigError{Key: certKey, Err: err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, &ConfigError{Key: keyKey, Err: err}
	}
	certs, err := parseCerts(certPEMBytes)
	if err != nil {
		return nil, configErr(certKey, "%s: %w", certFile, err)
	}
	pair, err := tls.X509KeyPair(certPEMBytes, keyPEM)
	if err != nil {
		return nil, configErr(keyKey, "%s does not hold the key of %s: %w", keyFile, certFile, err)
	}
	ca := certs[0]
	// Every certificate in the file, not only the issuer: the last becomes
	// the app's ca.crt, and an unconstrained root there could sign for any
	// host the app calls.
	for i, c := range certs {
		if err := checkConstraints(c, a.host); err != nil {
			return nil, configErr(certKey, "%s, certificate %d: %w", certFile, i+1, err)
		}
	}
	if now := a.now(); now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
		return nil, configErr(certKey, "%s: CA valid from %s to %s, not now", certFile, ca.NotBefore, ca.NotAfter)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, configErr(keyKey, "%s: key cannot sign", keyFile)
	}
	a.issuer, a.issuerKey = ca, signer
	for _, c := range certs {
		a.chain = append(a.chain, c.Raw)
	}
	return certs[len(certs)-1], nil
}

func issueLeaf(host string, now time.Time, issuer *x509.Certificate, issuerKey crypto.Signer, chain [][]byte) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("intercept: generate leaf key: %w", err)
	}
	sn, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(leafLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("intercept: sign leaf for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("intercept: parse leaf: %w", err)
	}
	return &tls.Certificate{
		Certificate: append([][]byte{der}, chain...),
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
