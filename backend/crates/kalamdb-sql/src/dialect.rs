//! The SQL dialect KalamDB parses: PostgreSQL's, with one change.
//!
//! PostgreSQL's dialect in sqlparser accepts any expression as the name of a named
//! function argument (`f(expr => value)`), so it parses every function argument
//! twice (first as a possible name, then as the value): nested calls such as
//! `abs(abs(abs(...)))` cost 2^depth, and a few dozen levels would hold a worker
//! for hours. KalamDB takes PostgreSQL's own rule instead — a named argument's name
//! is an identifier (`f(name => value)`) — and reads literals and plain column names
//! without first trying them as type names (see `parse_prefix`); it is PostgreSQL in
//! every other respect
//! (it reports PostgreSQL's type id, so the parser's dialect checks treat it as
//! PostgreSQL).

use std::any::TypeId;

use datafusion::sql::sqlparser::ast::Expr;
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

#[derive(Debug, Default, Clone, Copy)]
pub struct KalamDialect(PostgreSqlDialect);

impl Dialect for KalamDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<PostgreSqlDialect>()
    }

    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        false
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.0.identifier_quote_style(identifier)
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }

    fn supports_unicode_string_literal(&self) -> bool {
        self.0.supports_unicode_string_literal()
    }

    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        self.0.is_reserved_for_identifier(kw)
    }

    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.0.is_custom_operator_part(ch)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.0.get_next_precedence(parser)
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        self.0.supports_filter_during_aggregation()
    }

    fn supports_group_by_expr(&self) -> bool {
        self.0.supports_group_by_expr()
    }

    fn prec_value(&self, prec: Precedence) -> u8 {
        self.0.prec_value(prec)
    }

    fn allow_extract_custom(&self) -> bool {
        self.0.allow_extract_custom()
    }

    fn allow_extract_single_quotes(&self) -> bool {
        self.0.allow_extract_single_quotes()
    }

    fn supports_create_index_with_clause(&self) -> bool {
        self.0.supports_create_index_with_clause()
    }

    fn supports_explain_with_utility_options(&self) -> bool {
        self.0.supports_explain_with_utility_options()
    }

    fn supports_listen_notify(&self) -> bool {
        self.0.supports_listen_notify()
    }

    fn supports_factorial_operator(&self) -> bool {
        self.0.supports_factorial_operator()
    }

    fn supports_bitwise_shift_operators(&self) -> bool {
        self.0.supports_bitwise_shift_operators()
    }

    fn supports_comment_on(&self) -> bool {
        self.0.supports_comment_on()
    }

    fn supports_load_extension(&self) -> bool {
        self.0.supports_load_extension()
    }

    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.0.supports_named_fn_args_with_colon_operator()
    }

    fn supports_empty_projections(&self) -> bool {
        self.0.supports_empty_projections()
    }

    fn supports_nested_comments(&self) -> bool {
        self.0.supports_nested_comments()
    }

    fn supports_string_escape_constant(&self) -> bool {
        self.0.supports_string_escape_constant()
    }

    fn supports_numeric_literal_underscores(&self) -> bool {
        self.0.supports_numeric_literal_underscores()
    }

    fn supports_array_typedef_with_brackets(&self) -> bool {
        self.0.supports_array_typedef_with_brackets()
    }

    fn supports_geometric_types(&self) -> bool {
        self.0.supports_geometric_types()
    }

    fn supports_set_names(&self) -> bool {
        self.0.supports_set_names()
    }

    fn supports_alter_column_type_using(&self) -> bool {
        self.0.supports_alter_column_type_using()
    }

    fn supports_notnull_operator(&self) -> bool {
        self.0.supports_notnull_operator()
    }

    fn supports_interval_options(&self) -> bool {
        self.0.supports_interval_options()
    }

    fn supports_insert_table_alias(&self) -> bool {
        self.0.supports_insert_table_alias()
    }

    fn supports_create_table_like_parenthesized(&self) -> bool {
        self.0.supports_create_table_like_parenthesized()
    }

    fn supports_select_wildcard_with_alias(&self) -> bool {
        self.0.supports_select_wildcard_with_alias()
    }

    fn supports_comma_separated_trim(&self) -> bool {
        self.0.supports_comma_separated_trim()
    }

    fn supports_xml_expressions(&self) -> bool {
        self.0.supports_xml_expressions()
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        self.0.supports_comment_optimizer_hint()
    }

    /// A number or a quoted string is read as the value it is. The parser would first
    /// try it as the type name of a typed string (`DATE '2026-01-02'`), which a literal
    /// can never start, and that failing try formats an error message: per literal, it
    /// was a fifth of a 1000-row INSERT's parsing. The result is the parser's own
    /// (`Expr::Value` of `parse_value`), as on its fallback path.
    ///
    /// Likewise a plain column name: a word that is no keyword can only name a custom
    /// type, whose typed-string try the parser refuses (formatting an error per column
    /// reference, a twentieth of a point SELECT) before reading the word as an
    /// identifier. When what follows the word can only end or continue an expression
    /// (a comma, a parenthesis closing, an operator, a keyword such as FROM or AS,
    /// `.` of `t.c`, which the parser's compound rule reads on), it is that identifier
    /// at once; anything else (`(` of a call, a string, another name) takes the
    /// parser's own path.
    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        match &parser.peek_token_ref().token {
            Token::Number(_, _) | Token::SingleQuotedString(_) => Some(parser.parse_value().map(Expr::Value)),
            Token::Word(w)
                if w.keyword == Keyword::NoKeyword
                    && ends_an_operand(&parser.peek_nth_token_ref(1).token) =>
            {
                let token = parser.next_token();
                match token.token {
                    Token::Word(w) => Some(Ok(Expr::Identifier(w.to_ident(token.span)))),
                    _ => unreachable!("peeked a word"),
                }
            }
            _ => None,
        }
    }
}

/// Whether `token`, right after an operand, can only end it or continue the
/// expression around it.
fn ends_an_operand(token: &Token) -> bool {
    match token {
        Token::Word(w) => w.keyword != Keyword::NoKeyword,
        Token::EOF
        | Token::Comma
        | Token::SemiColon
        | Token::RParen
        | Token::RBracket
        | Token::Period
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::DoubleColon => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::KalamDialect;

    #[test]
    fn literals_and_names_parse_exactly_as_in_postgresql() {
        for sql in [
            "INSERT INTO t VALUES (1, 'a', -2.5, 1e3, 'it''s', NULL, TRUE, $1), (2, E'x\\ny', 'b' || 'c', '7'::INT)",
            "SELECT DATE '2026-01-02', TIMESTAMP '2026-01-02 03:04:05', INTERVAL '1' DAY, BOOL 'true'",
            "SELECT 'a' LIKE 'b', 1 + 2 * 3, -(4), 'x' IS NULL, 5 BETWEEN 1 AND 9, 'k' IN ('k', 'l')",
            "UPDATE t SET v = 3, w = 'z' WHERE id = 42 AND name <> 'q'",
            "SELECT 12345678901234567890, .5, 0x1F, 'multi' 'part'",
            "SELECT id, kind AS k, t.payload, \"Quoted\", upper(name), count(*), x y FROM s.t WHERE id = 5 AND _x = 1",
            "SELECT a[1], b::INT, c.d.e, f -> 'k', g ->> 'k', h IS NULL, i NOT IN (1), j || k FROM t ORDER BY l DESC, m",
            "SELECT * FROM t JOIN u ON t.a = u.b WHERE c BETWEEN d AND e GROUP BY f HAVING count(g) > 1 LIMIT 3",
            "UPDATE t SET v = w + 1, x = y WHERE z IN (SELECT q FROM r) RETURNING v, x",
        ] {
            let kalam = Parser::parse_sql(&KalamDialect::default(), sql);
            let postgres = Parser::parse_sql(&PostgreSqlDialect {}, sql);
            assert_eq!(kalam, postgres, "{sql}");
            assert!(kalam.is_ok(), "{sql}: {kalam:?}");
        }
    }
}
