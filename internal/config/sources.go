package config

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/viper"
)

// SourceKind is one of the places a value comes from, lowest precedence
// first.
type SourceKind int

const (
	Default SourceKind = iota
	File
	Environment
	Flag
	// Demo is a value --demo fixes: its mock's URL and credentials.
	Demo
)

// Source is where a key's effective value came from.
type Source struct {
	Kind SourceKind
	// Name is the file's path, the variable or the flag; empty for Default
	// and Demo.
	Name string
}

func (s Source) String() string {
	switch s.Kind {
	case File:
		return "file " + s.Name
	case Environment:
		return "environment " + s.Name
	case Flag:
		return "flag " + s.Name
	case Demo:
		return "demo"
	}
	return "default"
}

// commandLine is what the arguments say: the switches, and the keys given
// as flags, by name.
type commandLine struct {
	action     Action
	demo       bool
	configFile string
	keys       map[string]string
}

// switches are the flags that are not keys; every one but --config is a
// boolean.
var switches = []struct {
	name, arg, usage string
	action           Action
}{
	{"config", "PATH", "YAML configuration file (or DINIE_PROXY_CONFIG)", Serve},
	{"demo", "", "run against a built-in mock of the Dinie API, in every mode; no credentials needed", Serve},
	{"check", "", "validate the configuration, fetch one token and exit: 0 with the token's expiry, 1 if no token, 2 if invalid", Check},
	{"print-config", "", "print the effective configuration as YAML, each value's source beside it, secrets redacted", PrintConfig},
	{"version", "", "print the version, VCS revision and Go version", Version},
	{"help", "", "print this help", Help},
}

// parseArgs reads --name value, --name=value and, for a boolean, a bare
// --name (or --name true|false); one dash works as well as two.
func parseArgs(args []string) (commandLine, error) {
	cl := commandLine{keys: map[string]string{}}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, ok := strings.CutPrefix(arg, "-")
		if !ok || name == "" || name == "-" {
			return cl, invalid("command line", "unexpected argument %q: settings are flags, --<key> VALUE", arg)
		}
		name = strings.TrimPrefix(name, "-")
		name, value, hasValue := strings.Cut(name, "=")
		k, isKey := lookupKey(name)
		isBool := k.boolean || (!isKey && name != "config")
		if !isKey && !isSwitch(name) {
			return cl, invalid("--"+name, "no such flag; did you mean --%s?", closest(name, flagNames()))
		}
		if !hasValue {
			switch {
			case isBool:
				value = "true"
				// Positional arguments mean nothing here, so "--intercept.enabled
				// false" cannot be read any other way.
				if i+1 < len(args) && isBoolWord(args[i+1]) {
					value = args[i+1]
					i++
				}
			case i+1 < len(args):
				value = args[i+1]
				i++
			default:
				return cl, invalid("--"+name, "needs a value")
			}
		}
		if isKey {
			cl.keys[name] = value
			continue
		}
		if name == "config" {
			cl.configFile = value
			continue
		}
		on, err := parseSwitch(name, value)
		if err != nil {
			return cl, err
		}
		if !on {
			continue
		}
		switch a := switchAction(name); {
		case name == "demo":
			cl.demo = true
		case a == Help:
			// --help wins over anything else on the line.
			cl.action = Help
		case cl.action == Help:
		case cl.action != Serve && cl.action != a:
			return cl, invalid("--"+name, "choose one of --check, --print-config and --version")
		default:
			cl.action = a
		}
	}
	return cl, nil
}

func isBoolWord(s string) bool {
	s = strings.ToLower(s)
	return s == "true" || s == "false"
}

func parseSwitch(name, value string) (bool, error) {
	switch strings.ToLower(value) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, invalid("--"+name, "%q is not true or false", value)
}

func isSwitch(name string) bool {
	if name == "h" {
		return true
	}
	for _, s := range switches {
		if s.name == name {
			return true
		}
	}
	return false
}

func switchAction(name string) Action {
	if name == "h" {
		return Help
	}
	for _, s := range switches {
		if s.name == name {
			return s.action
		}
	}
	return Serve
}

func flagNames() []string {
	var names []string
	for _, s := range switches {
		names = append(names, s.name)
	}
	for _, k := range keys {
		names = append(names, k.name)
	}
	return names
}

// environment returns the DINIE_PROXY_ variables of environ, refusing any
// that names no key: a typo of DINIE_PROXY_UPSTREAM_URL must not leave the
// proxy pointed at production.
func environment(environ []string) (map[string]string, error) {
	// Each variable, and what it sets.
	known := map[string]string{envPrefix + "CONFIG": "the configuration file"}
	for _, k := range keys {
		known[envName(k.name)] = k.name
	}
	env := map[string]string{}
	var unknown []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		if _, ok := known[name]; !ok {
			unknown = append(unknown, name)
			continue
		}
		env[name] = value
	}
	if len(unknown) > 0 {
		// The same one whatever the environment's order.
		name := slices.Min(unknown)
		names := slices.Sorted(maps.Keys(known))
		near := closest(name, names)
		return nil, invalid(name, "no such setting; did you mean %s (%s)?", near, known[near])
	}
	return env, nil
}

// readFile returns the keys the YAML file sets, as text; a YAML list is
// joined with commas (intercept.passthrough).
func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, invalid("config file", "%v", err)
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
		// YAML's type errors span several lines; the contract is one.
		return nil, invalid("config file", "%s: %s", path, strings.Join(strings.Fields(err.Error()), " "))
	}
	values := map[string]string{}
	var names []string
	for _, k := range keys {
		names = append(names, k.name)
	}
	all := v.AllKeys()
	sort.Strings(all)
	for _, name := range all {
		if _, ok := lookupKey(name); !ok {
			return nil, invalid(name, "unknown key in %s; did you mean %s?", path, closest(name, names))
		}
		switch val := v.Get(name).(type) {
		case nil:
		case []any:
			var items []string
			for _, item := range val {
				if _, ok := item.(map[string]any); ok {
					return nil, invalid(name, "a list of mappings in %s; want values", path)
				}
				items = append(items, fmt.Sprint(item))
			}
			values[name] = strings.Join(items, ",")
		default:
			values[name] = fmt.Sprint(val)
		}
	}
	return values, nil
}
