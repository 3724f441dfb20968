/* inventory.c: a small stock-keeping table for a workshop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 32
#define INITIAL_CAP 8

struct item {
    char name[NAME_MAX_LEN];
    int quantity;
    double unit_price;
};

struct inventory {
    struct item *items;
    size_t count;
    size_t cap;
};

static int
inventory_grow(struct inventory *inv)
{
    size_t cap = inv->cap ? inv->cap * 2 : INITIAL_CAP;
    struct item *items = realloc(inv->items, cap * sizeof(*items));

    if (!items)
        return -1;
    inv->items = items;
    inv->cap = cap;
    return 0;
}

void
inventory_init(struct inventory *inv)
{
    inv->items = NULL;
    inv->count = 0;
    inv->cap = 0;
}

void
inventory_free(struct inventory *inv)
{
    free(inv->items);
    inventory_init(inv);
}

struct item *
find_item(struct inventory *inv, const char *name)
{
    for (size_t i = 0; i < inv->count; i++)
        if (strcmp(inv->items[i].name, name) == 0)
            return &inv->items[i];
    return NULL;
}

int
add_item(struct inventory *inv, const char *name, int quantity, double unit_price)
{
    struct item *it = find_item(inv, name);

    if (it) {
        it->quantity += quantity;
        it->unit_price = unit_price;
        return 0;
    }
    if (strlen(name) >= NAME_MAX_LEN)
        return -1;
    if (inv->count == inv->cap && inventory_grow(inv) != 0)
        return -1;
    it = &inv->items[inv->count++];
    strcpy(it->name, name);
    it->quantity = quantity;
    it->unit_price = unit_price;
    return 0;
}

int
remove_stock(struct inventory *inv, const char *name, int quantity)
{
    struct item *it = find_item(inv, name);

    if (!it || it->quantity < quantity)
        return -1;
    it->quantity -= quantity;
    return 0;
}

double
total_value(const struct inventory *inv)
{
    double sum = 0.0;

    for (size_t i = 0; i < inv->count; i++)
        sum += inv->items[i].quantity * inv->items[i].unit_price;
    return sum;
}

size_t
count_low_stock(const struct inventory *inv, int threshold)
{
    size_t n = 0;

    for (size_t i = 0; i < inv->count; i++)
        if (inv->items[i].quantity < threshold)
            n++;
    return n;
}

static int
compare_by_value(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    double vx = x->quantity * x->unit_price;
    double vy = y->quantity * y->unit_price;

    return (vx < vy) - (vx > vy);
}

void
sort_by_value(struct inventory *inv)
{
    qsort(inv->items, inv->count, sizeof(*inv->items), compare_by_value);
}

void
print_inventory(const struct inventory *inv, FILE *out)
{
    fprintf(out, "%-20s %8s %10s\n", "item", "qty", "value");
    for (size_t i = 0; i < inv->count; i++) {
        const struct item *it = &inv->items[i];
        fprintf(out, "%-20s %8d %10.2f\n", it->name, it->quantity,
                it->quantity * it->unit_price);
    }
    fprintf(out, "total value: %.2f\n", total_value(inv));
}

int
main(void)
{
    struct inventory inv;

    inventory_init(&inv);
    add_item(&inv, "hammer", 12, 9.50);
    add_item(&inv, "screwdriver", 30, 3.25);
    add_item(&inv, "drill", 4, 79.00);
    add_item(&inv, "saw", 7, 15.75);
    add_item(&inv, "hammer", 3, 9.75);
    if (remove_stock(&inv, "drill", 1) != 0)
        fprintf(stderr, "not enough drills\n");
    sort_by_value(&inv);
    print_inventory(&inv, stdout);
    printf("low stock items: %zu\n", count_low_stock(&inv, 10));
    if (find_item(&inv, "wrench") == NULL)
        printf("no wrench in stock\n");
    inventory_free(&inv);
    return 0;
}
