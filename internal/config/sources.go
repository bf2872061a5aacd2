package config

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"

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
		// An argument that is not what it should be is named by its
		// position or by the text before its first space or '=', never
		// whole: what follows may be a secret ("--auth.client_secret VALUE"
		// quoted as one argument in a Kubernetes args: list).
		name, rest, ok := flagName(args[i])
		if !ok {
			return cl, invalid("command line", "argument %d is not a flag (its text is not shown): settings are flags, --<key> VALUE", i+1)
		}
		if !isFlag(name) {
			return cl, invalid("--"+name, "no such flag; did you mean --%s?", closest(name, flagNames()))
		}
		if rest != "" && rest[0] != '=' {
			return cl, invalid("--"+name, "a flag and its value in one argument (argument %d; the rest is not shown): give them as two arguments, or as --%s=VALUE", i+1, name)
		}
		value, hasValue := strings.CutPrefix(rest, "=")
		k, isKey := lookupKey(name)
		isBool := k.boolean || (!isKey && name != "config")
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
			case i+1 < len(args) && !isFlagArg(args[i+1]):
				value = args[i+1]
				i++
			default:
				// A flag in place of the value is a missing value, not the
				// value: taken as one, its own value would be echoed by this
				// key's error.
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
		switch a, _ := lookupSwitch(name); {
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

// flagName splits a flag argument after its one or two dashes at the
// first '=' or space: rest is "", "=VALUE", or what followed a space. ok is
// false for an argument that is no flag.
func flagName(arg string) (name, rest string, ok bool) {
	name, ok = strings.CutPrefix(arg, "-")
	if !ok || name == "" || name == "-" {
		return "", "", false
	}
	name = strings.TrimPrefix(name, "-")
	if end := strings.IndexFunc(name, func(r rune) bool { return r == '=' || unicode.IsSpace(r) }); end >= 0 {
		name, rest = name[:end], name[end:]
	}
	return name, rest, name != ""
}

// isFlagArg says whether arg is a known flag, as the next argument after
// a flag that needs a value: "-1s" is a value, "--auth.client_secret" not.
func isFlagArg(arg string) bool {
	name, _, ok := flagName(arg)
	return ok && isFlag(name)
}

func isFlag(name string) bool {
	_, isKey := lookupKey(name)
	_, isSwitch := lookupSwitch(name)
	return isKey || isSwitch
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

// lookupSwitch returns the action of the switch called name (-h is
// --help); ok is false for a name that is no switch.
func lookupSwitch(name string) (a Action, ok bool) {
	if name == "h" {
		return Help, true
	}
	for _, s := range switches {
		if s.name == name {
			return s.action, true
		}
	}
	return Serve, false
}

func flagNames() []string {
	var names []string
	for _, s := range switches {
		names = append(names, s.name)
	}
	return append(names, keyNames()...)
}

func keyNames() []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
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
		// Variable names are case-sensitive, so dinie_proxy_upstream_url
		// sets nothing: ignored, it would leave the proxy on production.
		if len(name) < len(envPrefix) || !strings.EqualFold(name[:len(envPrefix)], envPrefix) {
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
		what := "no such setting"
		// A name with a space in it is a value given in its name
		// (docker's -e "NAME VALUE"): the rest may be a secret.
		if end := strings.IndexFunc(name, unicode.IsSpace); end >= 0 {
			name, what = name[:end], "a space in the name (the rest not shown)"
		}
		near := closest(name, slices.Sorted(maps.Keys(known)))
		if name != near && strings.EqualFold(name, near) {
			what = "names are upper-case"
		}
		return nil, invalid(name, "%s; did you mean %s (%s)?", what, near, known[near])
	}
	return env, nil
}

// readFile returns the keys the YAML file sets, as text; a YAML list is
// joined with commas (intercept.passthrough). Its errors name keys, never
// a value: the file holds the client secret.
func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, invalid("config file", "%v", err)
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
		// YAML's type errors span several lines; the contract is one.
		return nil, invalid("config file", "%s: %s", path, yamlProblem(err))
	}
	values := map[string]string{}
	for _, k := range keys {
		val, err := fileValue(k, v.Get(k.name), path)
		if err != nil {
			return nil, &Error{Key: k.name, Err: err}
		}
		if val != "" {
			values[k.name] = val
		}
	}
	all := v.AllKeys()
	sort.Strings(all)
	for _, name := range all {
		if _, ok := lookupKey(name); ok {
			continue
		}
		// A name under a key is a mapping, refused above; a section given
		// a value names no key.
		if isSection(name) {
			return nil, invalid(name, "not a mapping in %s; want %s.* keys under it", path, name)
		}
		return nil, invalid(name, "unknown key in %s; did you mean %s?", path, closest(name, keyNames()))
	}
	return values, nil
}

// fileValue is k's value from the file as text, "" when unset. Anything
// but a single value is refused (a list for a list key): a list as
// auth.client_secret would otherwise become the secret, its brackets
// included. The error shows none of the value.
func fileValue(k key, val any, path string) (string, error) {
	switch val := val.(type) {
	case nil:
		return "", nil
	case map[string]any:
		return "", fmt.Errorf("a mapping in %s; want a single value", path)
	case []any:
		if !k.list {
			return "", fmt.Errorf("a list in %s; want a single value", path)
		}
		var items []string
		for _, item := range val {
			switch item.(type) {
			case map[string]any, []any:
				return "", fmt.Errorf("a list of lists or mappings in %s; want a list of values", path)
			}
			items = append(items, fmt.Sprint(item))
		}
		return strings.Join(items, ","), nil
	}
	return fmt.Sprint(val), nil
}

// isSection says whether name is a section of keys (auth for
// auth.client_id), which the file must give as a mapping.
func isSection(name string) bool {
	for _, k := range keys {
		if section, _, _ := strings.Cut(k.name, "."); name == section {
			return true
		}
	}
	return false
}

// yamlQuoted matches what YAML's messages quote of the file: a value in
// backquotes, an anchor's name in single quotes, a tag.
var yamlQuoted = regexp.MustCompile("`[^`]*`|'[^']*'|!\\S*")

// yamlProblem is YAML's error on one line, with the file's text left out:
// a secret beginning with '*' is read as an alias and named in "unknown
// anchor", and a scalar where a mapping belongs is quoted whole. Standard
// tags (!!str, !!int) are kept: they say what was found.
func yamlProblem(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	return yamlQuoted.ReplaceAllStringFunc(msg, func(m string) string {
		switch m {
		case "!!str", "!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary", "!!seq", "!!map", "!!merge":
			return m
		}
		return "(not shown)"
	})
}
