package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Usage writes --help: the switches, then every key with its default and
// its variable.
func Usage(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`Usage: dinie-auth-proxy [--config PATH] [--<key> VALUE]...
       dinie-auth-proxy --demo | --check | --print-config | --version | --help

Runs beside an application and injects a Dinie API access token into every
request it forwards. See README.md and docs/configuration.md.

`)
	for _, s := range switches {
		fmt.Fprintf(&b, "  --%s\n        %s\n", strings.TrimSpace(s.name+" "+s.arg), s.usage)
	}
	b.WriteString(`
Keys. Each is a flag (--<key> VALUE; a boolean key may stand alone: --intercept.enabled),
an environment variable, and a key of the --config file (nested: upstream: {url: ...}).
Precedence, lowest first: default, file, environment, flag. An empty value counts as unset.

`)
	for _, k := range keys {
		def := "none"
		if k.def != "" {
			def = k.def
		}
		fmt.Fprintf(&b, "  --%s (default %s; env %s)\n        %s\n", k.name, def, envName(k.name), k.usage)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// redacted stands for a secret's value in --print-config.
const redacted = "<redacted>"

// PrintConfig writes the effective configuration as YAML that --config
// would read back (secrets aside), each value's source in a comment
// beside it. Secret values are replaced by <redacted>.
func (c *Command) PrintConfig(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# dinie-auth-proxy: the effective configuration; beside each value, where it came from.\n")
	section := ""
	for _, k := range keys {
		sec, leaf, _ := strings.Cut(k.name, ".")
		if sec != section {
			fmt.Fprintf(&b, "%s:\n", sec)
			section = sec
		}
		v := c.values[k.name]
		if k.secret && v != "" {
			v = redacted
		}
		fmt.Fprintf(&b, "  %s: %s  # %s\n", leaf, yamlString(v), c.Settings.Source(k.name))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// yamlString quotes s: a JSON string is a YAML double-quoted scalar, and
// quoting every value keeps "off" or "1e3" text.
func yamlString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}
