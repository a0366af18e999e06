// Building the page safely: elements from data with textContent only, never HTML strings.

/**
 * Create an element: h("button", {class: "primary", onclick: fn}, "Text", child...).
 * Attributes: `class` (string or array), `dataset` (object), `on<event>` (listener),
 * `text` (textContent), boolean attributes (true/false), anything else with
 * setAttribute. Children: nodes, strings (text nodes), arrays, null/false (skipped).
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") {
      const classes = Array.isArray(value) ? value.filter(Boolean) : String(value).split(/\s+/);
      for (const c of classes) if (c) element.classList.add(c);
    } else if (name === "dataset") {
      for (const [key, data] of Object.entries(value)) element.dataset[key] = String(data);
    } else if (name === "text") {
      element.textContent = String(value);
    } else if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "value" && "value" in element) {
      element.value = String(value);
    } else if (name === "checked" || name === "disabled" || name === "selected") {
      element[name] = Boolean(value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

/** Append children (nodes, strings, arrays; null and false are skipped). */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Remove every child of an element. */
export function clear(element) {
  while (element.firstChild) element.firstChild.remove();
  return element;
}

/** Replace an element's children. */
export function replace(element, ...children) {
  clear(element);
  return append(element, children);
}

/** Set a text only when it changed (live values update many times a second). */
export function setText(element, text) {
  const value = String(text);
  if (element.textContent !== value) element.textContent = value;
}

/** Toggle a set of mutually exclusive classes: keep `wanted`, drop the others. */
export function setClass(element, classes, wanted) {
  for (const c of classes) element.classList.toggle(c, c === wanted);
}

/** An <option>. */
export function option(value, label, selected = false) {
  return h("option", { value, selected }, label);
}
