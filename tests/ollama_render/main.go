// Renders Go chat templates the way Ollama's chat endpoint prepares them, for sftlab's Modelfile test
// (tests/test_modelfile.py). Written from Ollama's documented behaviour (server/routes.go, template/template.go):
//
//   - the Modelfile's SYSTEM becomes a first system message when the request's first message is not one;
//   - consecutive messages of the same role are merged into one, their contents joined by a blank line, except
//     tool messages;
//   - .System is every system message's content joined by a blank line; .Messages keeps the system messages;
//   - a tool call's arguments and a tool print as JSON (Go's encoding/json: keys sorted, compact);
//   - missing keys are zero values.
//
// Input on stdin: a JSON list of cases {template, system, messages, tools, think}; output: a JSON list of renderings
// (or of {"error": ...} for a case whose template fails).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type toolCall struct {
	ID       string
	Function struct {
		Index     int
		Name      string
		Arguments args
	}
}

type args map[string]any

func (a args) String() string {
	if a == nil {
		return "{}"
	}
	b, _ := json.Marshal(a)
	return string(b)
}

// A tool as Ollama's template package gives it (its JSON keys in this order; properties sorted).
type tool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Type       string         `json:"type"`
			Required   []string       `json:"required,omitempty"`
			Properties map[string]property `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

// A property as Ollama's api.ToolProperty marshals it (the fields sftlab's tests use, in its order).
type property struct {
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
	Enum        []any  `json:"enum,omitempty"`
}

func (t tool) String() string {
	b, _ := json.Marshal(t)
	return string(b)
}

type message struct {
	Role       string
	Content    string
	Thinking   string
	ToolCalls  []toolCall
	ToolName   string
	ToolCallID string
}

type inMessage struct {
	Role       string `json:"role"`
	Content    string `json:"content"`
	Thinking   string `json:"thinking"`
	ToolName   string `json:"tool_name"`
	ToolCallID string `json:"tool_call_id"`
	ToolCalls  []struct {
		ID       string `json:"id"`
		Function struct {
			Name      string         `json:"name"`
			Arguments map[string]any `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

type testCase struct {
	Template string           `json:"template"`
	System   string           `json:"system"`
	Messages []inMessage      `json:"messages"`
	Tools    []tool           `json:"tools"`
	Think    *bool            `json:"think"`
}

func render(c testCase) (string, error) {
	msgs := c.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && c.System != "" {
		msgs = append([]inMessage{{Role: "system", Content: c.System}}, msgs...)
	}
	var system []string
	var collated []*message
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if n := len(collated); n > 0 && collated[n-1].Role == m.Role && m.Role != "tool" {
			collated[n-1].Content += "\n\n" + m.Content
			continue
		}
		tm := &message{Role: m.Role, Content: m.Content, Thinking: m.Thinking, ToolName: m.ToolName, ToolCallID: m.ToolCallID}
		for i, tc := range m.ToolCalls {
			var call toolCall
			call.ID = tc.ID
			call.Function.Index = i
			call.Function.Name = tc.Function.Name
			call.Function.Arguments = args(tc.Function.Arguments)
			tm.ToolCalls = append(tm.ToolCalls, call)
		}
		collated = append(collated, tm)
	}
	tools := c.Tools
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	think := c.Think != nil && *c.Think
	err = tmpl.Execute(&out, map[string]any{
		"System": strings.Join(system, "\n\n"), "Messages": collated, "Tools": tools, "Response": "",
		"Think": think, "IsThinkSet": c.Think != nil,
	})
	return out.String(), err
}

func main() {
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "reading the cases:", err)
		os.Exit(2)
	}
	results := make([]any, len(cases))
	for i, c := range cases {
		if text, err := render(c); err != nil {
			results[i] = map[string]string{"error": err.Error()}
		} else {
			results[i] = text
		}
	}
	json.NewEncoder(os.Stdout).Encode(results)
}
