/*-------------------------------------------------------------------------
 *
 * errors.c
 *	  Trimming of the errors that fail() and stall rescue store: every
 *	  string value cut to queue_engine.max_error_field_bytes on a character
 *	  boundary, the whole error kept under 64kB, "truncated": true added
 *	  when anything was cut.  A 10 MB error is never stored whole.
 *
 *-------------------------------------------------------------------------
 */
#include "queue_engine.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"

/* Build {"message": text}, the stored form of a non-object error. */
static Jsonb *
message_object(const char *text, int len)
{
	JsonbParseState *state = NULL;
	JsonbValue	key;
	JsonbValue	val;
	JsonbValue *res;

	key.type = jbvString;
	key.val.string.val = "message";
	key.val.string.len = 7;
	val.type = jbvString;
	val.val.string.val = (char *) text;
	val.val.string.len = len;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	pushJsonbValue(&state, WJB_KEY, &key);
	pushJsonbValue(&state, WJB_VALUE, &val);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * Copy an object error, cutting string values longer than field_cap.
 * When force_flag or anything was cut, "truncated": true is added at the
 * top level.
 */
static Jsonb *
trim_pass(Jsonb *error, int field_cap, bool force_flag, bool *cut)
{
	JsonbIterator *it = JsonbIteratorInit(&error->root);
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;
	int			depth = 0;

	*cut = false;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				depth++;
				res = pushJsonbValue(&state, tok, NULL);
				break;
			case WJB_END_OBJECT:
			case WJB_END_ARRAY:
				if (--depth == 0 && tok == WJB_END_OBJECT &&
					(*cut || force_flag))
				{
					JsonbValue	key;
					JsonbValue	flag;

					key.type = jbvString;
					key.val.string.val = "truncated";
					key.val.string.len = 9;
					flag.type = jbvBool;
					flag.val.boolean = true;
					pushJsonbValue(&state, WJB_KEY, &key);
					pushJsonbValue(&state, WJB_VALUE, &flag);
				}
				res = pushJsonbValue(&state, tok, NULL);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				if (v.type == jbvString && v.val.string.len > field_cap)
				{
					v.val.string.len = pg_mbcliplen(v.val.string.val,
													v.val.string.len,
													field_cap);
					*cut = true;
				}
				res = pushJsonbValue(&state, tok, &v);
				break;
			case WJB_KEY:
				res = pushJsonbValue(&state, tok, &v);
				break;
			case WJB_DONE:
				break;
		}
	}
	return JsonbValueToJsonb(res);
}

/*
 * Return the stored form of error: an object whose string values are at
 * most field_cap bytes and whose total size is at most total_cap bytes.
 */
Jsonb *
qe_trim_error(Jsonb *error, int field_cap, int total_cap)
{
	Jsonb	   *obj = error;
	Jsonb	   *res;
	bool		cut;
	int			cap;

	if (!JB_ROOT_IS_OBJECT(error))
	{
		JsonbValue	scalar;

		if (JB_ROOT_IS_SCALAR(error) &&
			JsonbExtractScalar(&error->root, &scalar) &&
			scalar.type == jbvString)
			obj = message_object(scalar.val.string.val, scalar.val.string.len);
		else
		{
			char	   *text = JsonbToCString(NULL, &error->root,
											  VARSIZE(error));

			obj = message_object(text, strlen(text));
		}
	}

	/* Halve the field cap until the whole error fits. */
	for (cap = field_cap; cap >= 64; cap /= 2)
	{
		res = trim_pass(obj, cap, false, &cut);
		if (VARSIZE(res) <= (Size) total_cap)
			return res;
		pfree(res);
	}

	/*
	 * Too many keys or elements to fit even with short strings: keep the
	 * start of its text as the message.
	 */
	{
		char	   *text = JsonbToCString(NULL, &obj->root, VARSIZE(obj));
		int			len = pg_mbcliplen(text, strlen(text), field_cap);

		res = trim_pass(message_object(text, len), field_cap, true, &cut);
	}
	return res;
}
