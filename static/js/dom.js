/** Building the page's nodes: text only ever as text nodes (never HTML), with the data-testid hooks. */

export function element(tag, { className, testid, text } = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (testid) node.dataset.testid = testid;
  if (text) node.textContent = text;
  return node;
}
