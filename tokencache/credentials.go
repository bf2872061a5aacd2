package tokencache

import (
	"fmt"
	"os"
	"strings"
)

// credentialSource yields the client id and secret, each inline or from a
// file.
type credentialSource struct {
	id, idFile         string
	secret, secretFile string
}

func (s credentialSource) hasFiles() bool { return s.idFile != "" || s.secretFile != "" }

// load reads the credentials, re-reading the files each time.
//
// Re-reading the whole (tiny) file is what makes rotation work in
// Kubernetes: the kubelet never writes a mounted Secret in place. It writes
// the new version into a fresh timestamped directory and atomically swaps
// the `..data` symlink to it; the file we were given
// (`/var/run/secrets/dinie/client_secret`) is itself a symlink through
// `..data`. Opening the path again resolves the new target, while a
// watcher of the old inode or an open file handle would keep seeing the old
// secret forever. Comparing contents also catches in-place writes and
// renames, which is how people rotate files outside Kubernetes.
func (s credentialSource) load() (credentials, error) {
	id, err := valueOrFile(s.id, s.idFile, "client id")
	if err != nil {
		return credentials{}, err
	}
	secret, err := valueOrFile(s.secret, s.secretFile, "client secret")
	if err != nil {
		return credentials{}, err
	}
	return credentials{id: id, secret: secret}, nil
}

func valueOrFile(value, file, what string) (string, error) {
	if file == "" {
		if value == "" {
			return "", fmt.Errorf("tokencache: no %s configured", what)
		}
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		// The *PathError names the file, never its contents.
		return "", fmt.Errorf("tokencache: read %s: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("tokencache: read %s: file %s is empty", what, file)
	}
	return v, nil
}
