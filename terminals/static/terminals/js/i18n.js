// The modules' words in the user's language. Django's JavaScript catalog (the URL
// terminals:javascript-catalog, a classic script the page loads before its modules, so it has
// run when they do) defines django.gettext and django.ngettext for the request's language.
// Without it (a host site's page that leaves it out) the English text as written is shown.
const django = globalThis.django ?? {};

export const gettext = django.gettext ?? ((text) => text);

export const ngettext = django.ngettext ??
  ((singular, plural, count) => (count === 1 ? singular : plural));

// "%(name)s" placeholders filled from ``values``, as Django's interpolate(format, values, true):
// a translation may put the values in another order than English does.
export function interpolate(format, values) {
  return format.replace(/%\((\w+)\)s/g, (match, name) => String(values[name]));
}
