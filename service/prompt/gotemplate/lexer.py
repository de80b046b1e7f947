"""Lexer for Go's text/template, following Go's text/template/parse/lex.go state by state.

Why a faithful port: model templates rely on the exact trim-marker rules ("{{- " and " -}}" remove
ALL adjacent space, tab, CR and LF; "{{-3}}" is the number -3), on raw `strings`, and on comments
that must touch the delimiters. The lexer runs over the whole text up front and stops at the first
error, emitting an ERROR token; the parser reports it only when it reaches that token, so errors
come out in the same order as Go's.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.store.gocompat import go_quote

LEFT, RIGHT = "{{", "}}"
SPACE_CHARS = " \t\r\n"

# Token types.
ERROR, EOF, TEXT, COMMENT = "error", "EOF", "text", "comment"
LEFT_DELIM, RIGHT_DELIM, SPACE = "leftDelim", "rightDelim", "space"
IDENT, FIELD, VARIABLE, DOT, NIL, BOOL = "identifier", "field", "variable", "dot", "nil", "bool"
STRING, RAW_STRING, CHAR_CONST, NUMBER = "string", "rawString", "charConstant", "number"
PIPE, LPAREN, RPAREN, ASSIGN, DECLARE, CHAR = "pipe", "leftParen", "rightParen", "assign", "declare", "char"
KEYWORDS = ("block", "break", "continue", "define", "else", "end", "if", "range", "template", "with")


@dataclass
class Token:
    typ: str
    val: str
    pos: int
    line: int

    def __str__(self) -> str:  # Go's item.String(), used in "unexpected X in Y"
        if self.typ == EOF:
            return "EOF"
        if self.typ == ERROR:
            return self.val
        if self.typ in KEYWORDS or self.typ in (DOT, NIL):
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_space(c: str) -> bool:
    return c != "" and c in SPACE_CHARS


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdigit()


def _has_left_trim(s: str, i: int) -> bool:
    return s[i : i + 1] == "-" and _is_space(s[i + 1 : i + 2])


def _has_right_trim(s: str, i: int) -> bool:
    return _is_space(s[i : i + 1]) and s[i + 1 : i + 2] == "-"


class _Lexer:
    def __init__(self, text: str):
        self.s = text
        self.pos = 0
        self.start = 0
        self.tokens: list[Token] = []
        self.paren = 0

    # -- helpers -------------------------------------------------------------
    def line_at(self, pos: int) -> int:
        return self.s.count("\n", 0, pos) + 1

    def emit(self, typ: str) -> None:
        self.tokens.append(Token(typ, self.s[self.start : self.pos], self.start, self.line_at(self.start)))
        self.start = self.pos

    def error(self, msg: str) -> bool:
        self.tokens.append(Token(ERROR, msg, self.start, self.line_at(self.start)))
        return False

    def peek(self) -> str:
        return self.s[self.pos : self.pos + 1]

    def accept(self, valid: str) -> bool:
        c = self.peek()
        if c and c in valid:
            self.pos += 1
            return True
        return False

    def accept_run(self, valid: str) -> None:
        while self.accept(valid):
            pass

    def at_right_delim(self) -> tuple[bool, bool]:
        if _has_right_trim(self.s, self.pos) and self.s.startswith(RIGHT, self.pos + 2):
            return True, True
        return self.s.startswith(RIGHT, self.pos), False

    def at_terminator(self) -> bool:
        c = self.peek()
        return c == "" or _is_space(c) or c in ".,|:)(" or self.s.startswith(RIGHT, self.pos)

    def skip_space_after(self) -> None:
        while _is_space(self.peek()):
            self.pos += 1
        self.start = self.pos

    # -- states --------------------------------------------------------------
    def run(self) -> list[Token]:
        ok = True
        while ok:
            x = self.s.find(LEFT, self.pos)
            if x < 0:
                self.pos = len(self.s)
                if self.pos > self.start:
                    self.emit(TEXT)
                self.emit(EOF)
                break
            end = x
            if _has_left_trim(self.s, x + 2):
                while end > self.start and self.s[end - 1] in SPACE_CHARS:
                    end -= 1
            if end > self.start:
                self.pos = end
                self.emit(TEXT)
            self.pos = self.start = x
            ok = self.left_delim()
        return self.tokens

    def left_delim(self) -> bool:
        self.pos += len(LEFT)
        after = 2 if _has_left_trim(self.s, self.pos) else 0
        if self.s.startswith("/*", self.pos + after):
            self.pos += after
            self.start = self.pos
            return self.comment()
        self.emit(LEFT_DELIM)
        self.pos += after
        self.start = self.pos
        self.paren = 0
        return self.inside_action()

    def comment(self) -> bool:
        x = self.s.find("*/", self.pos + 2)
        if x < 0:
            return self.error("unclosed comment")
        self.pos = x + 2
        delim, trim = self.at_right_delim()
        if not delim:
            return self.error("comment ends before closing delimiter")
        self.pos += (2 if trim else 0) + len(RIGHT)
        self.start = self.pos
        if trim:
            self.skip_space_after()
        return True

    def right_delim(self, trim: bool) -> bool:
        if trim:
            self.pos += 2
            self.start = self.pos
        self.pos += len(RIGHT)
        self.emit(RIGHT_DELIM)
        if trim:
            self.skip_space_after()
        return True

    def inside_action(self) -> bool:
        while True:
            delim, trim = self.at_right_delim()
            if delim:
                if self.paren == 0:
                    return self.right_delim(trim)
                return self.error("unclosed left paren")
            c = self.peek()
            if c == "":
                return self.error("unclosed action")
            if _is_space(c):
                n = 0
                while _is_space(self.peek()):
                    self.pos += 1
                    n += 1
                if _has_right_trim(self.s, self.pos - 1) and self.s.startswith(RIGHT, self.pos + 1):
                    self.pos -= 1
                    if n == 1:
                        return self.right_delim(True)
                self.emit(SPACE)
                continue
            self.pos += 1
            if c == "=":
                self.emit(ASSIGN)
            elif c == ":":
                if not self.accept("="):
                    return self.error("expected :=")
                self.emit(DECLARE)
            elif c == "|":
                self.emit(PIPE)
            elif c == '"':
                if not self.quote('"', "unterminated quoted string", STRING):
                    return False
            elif c == "'":
                if not self.quote("'", "unterminated character constant", CHAR_CONST):
                    return False
            elif c == "`":
                x = self.s.find("`", self.pos)
                if x < 0:
                    return self.error("unterminated raw quoted string")
                self.pos = x + 1
                self.emit(RAW_STRING)
            elif c == "$":
                if not self.field_or_variable(VARIABLE):
                    return False
            elif c == "." and self.peek() and not "0" <= self.peek() <= "9":  # at EOF "." is a number
                if not self.field_or_variable(FIELD):
                    return False
            elif c in "+-." or "0" <= c <= "9":
                self.pos -= 1
                if not self.number():
                    return False
            elif _is_alnum(c):
                if not self.identifier():
                    return False
            elif c == "(":
                self.paren += 1
                self.emit(LPAREN)
            elif c == ")":
                self.paren -= 1
                if self.paren < 0:
                    return self.error("unexpected right paren")
                self.emit(RPAREN)
            elif c.isascii() and c.isprintable():
                self.emit(CHAR)
            else:
                return self.error("unrecognized character in action: %s" % _rune(c))

    def quote(self, q: str, msg: str, typ: str) -> bool:
        while True:
            c = self.peek()
            self.pos += 1
            if c == "\\":
                c2 = self.peek()
                if c2 in ("", "\n"):
                    return self.error(msg)
                self.pos += 1
            elif c in ("", "\n"):
                return self.error(msg)
            elif c == q:
                self.emit(typ)
                return True

    def field_or_variable(self, typ: str) -> bool:
        if self.at_terminator():
            self.emit(VARIABLE if typ == VARIABLE else DOT)
            return True
        while _is_alnum(self.peek()):
            self.pos += 1
        if not self.at_terminator():
            return self.error("bad character %s" % _rune(self.peek()))
        self.emit(typ)
        return True

    def identifier(self) -> bool:
        while _is_alnum(self.peek()):
            self.pos += 1
        word = self.s[self.start : self.pos]
        if not self.at_terminator():
            return self.error("bad character %s" % _rune(self.peek()))
        if word in KEYWORDS:
            self.emit(word)
        elif word == "nil":
            self.emit(NIL)
        elif word in ("true", "false"):
            self.emit(BOOL)
        else:
            self.emit(IDENT)
        return True

    def number(self) -> bool:
        if not self.scan_number():
            return self.error("bad number syntax: %s" % _q(self.s[self.start : self.pos]))
        if self.peek() and self.peek() in "+-":
            # Complex constants (1+2i) are not supported.
            self.scan_number()
            return self.error("bad number syntax: %s" % _q(self.s[self.start : self.pos]))
        self.emit(NUMBER)
        return True

    def scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if _is_alnum(self.peek()):
            self.pos += 1
            return False
        return True


def _rune(c: str) -> str:
    """Go's %#U: U+0041 'A'."""
    if c == "":
        return "U+FFFFFFFFFFFFFFFF"
    return "U+%04X '%s'" % (ord(c), c) if c.isprintable() else "U+%04X" % ord(c)


def _q(s: str) -> str:
    return go_quote(s)


def lex(text: str) -> list[Token]:
    """All tokens of `text`, ending with EOF or with the first ERROR token."""
    return _Lexer(text).run()
